"""Screenshots of the listening tools for the README: docs/listen_{index,report,review}.png.

Builds a synthetic run (tones, random scores: `rerank.listen.synthetic`), its scaling curves
(`cmirm scaling --from`) and report, starts `cmirm review` on it, and photographs the pages with
headless Chromium (Debian's chromium + chromium-driver, as the browser tests use).

    python scripts/listen_screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import tempfile
from pathlib import Path

from rerank.listen.report_html import ReportConfig, write_report
from rerank.listen.synthetic import SyntheticRun, write_synthetic_run

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ("Upbeat pop with bright piano and handclaps", "Lo-fi hip hop beat with vinyl crackle, mellow keys",
         "Epic orchestral trailer music, big drums, rising strings", "Acoustic folk ballad, fingerpicked guitar",
         "Dark synthwave, pulsing bass, 100 BPM", "Bossa nova with nylon guitar and soft brushes")


def _browser_helpers():
    """tests/listen_browser.py, loaded by path (the same driver setup as the browser tests)."""
    spec = importlib.util.spec_from_file_location("listen_browser", ROOT / "tests" / "listen_browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _shot(driver, path: Path, width: int = 1400) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(height + 40, 600), 1600))
    driver.save_screenshot(str(path))
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    browser = _browser_helpers()
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory() as tmp:
        run = write_synthetic_run(Path(tmp) / "demo-run", SyntheticRun(
            n_instructions=6, n_candidates=6, seconds=2.0, texts=TEXTS, fail_every=17, seed=7))
        scaling = Path(tmp) / "scaling"
        subprocess.run([browser.cmirm_executable(), "scaling", "--from", str(run), "--out", str(scaling),
                        "--n-boot", "200"], check=True, stdout=subprocess.DEVNULL)
        report = write_report(ReportConfig(run, scaling=(scaling,)))
        args.out.mkdir(parents=True, exist_ok=True)
        with browser.chromium((1400, 900)) as driver:
            driver.get(report.index.as_uri())
            _shot(driver, args.out / "listen_index.png")
            driver.get((report.index.parent / "i" / "s00001.html").as_uri())
            next(th for th in driver.find_elements(By.CSS_SELECTOR, "table.candidates th")
                 if th.text.startswith("musicality")).click()
            _shot(driver, args.out / "listen_report.png")
        with browser.review_server(run, ["--seed", "0"]) as url, browser.chromium((1400, 1200)) as driver:
            driver.get(url)
            browser.wait_for(driver, lambda d: "vote(s) so far" in d.find_element(By.ID, "status").text)
            driver.find_element(By.CSS_SELECTOR, "#voter input").send_keys("ana\t")
            browser.wait_for(driver, lambda d: "by ana" in d.find_element(By.ID, "status").text)
            for axis, choice in (("alignment", "A"), ("musicality", "both")):
                driver.find_element(By.CSS_SELECTOR,
                                    f"#{axis}-choice label[data-testid='{choice}-radio-label']").click()
            driver.find_element(By.ID, "submit").click()
            browser.wait_for(driver, lambda d: "1 vote(s)" in d.find_element(By.ID, "status").text)
            driver.find_element(By.CSS_SELECTOR, "#alignment-choice label[data-testid='B-radio-label']").click()
            driver.find_element(By.CSS_SELECTOR, "#alignment-confidence label[data-testid='4-radio-label']").click()
            _shot(driver, args.out / "listen_review.png")


if __name__ == "__main__":
    main()
