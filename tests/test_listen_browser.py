"""The report and the review app in a real browser (headless Chromium driven by Selenium).

Skipped when Chromium is not installed, unless CMIRM_REQUIRE_BROWSER is set (CI sets it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from typer.testing import CliRunner

from cmirm_plugin.cli import app
from cmirm_plugin.manifest import read_records
from listen_browser import chromium, require_browser, review_server, wait_for
from rerank.listen.synthetic import SyntheticRun, write_synthetic_run
from rerank.listen.votes import VOTES
from train.data import load_pairs

pytestmark = [pytest.mark.timeout(600)]

XSS = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> calm piano"


@pytest.fixture(scope="module")
def browser_ready():
    require_browser()


@pytest.fixture(scope="module")
def review_ready(browser_ready):
    """The browser and Gradio (the ``ui`` extra, also in ``dev``)."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        reason = 'cmirm review needs Gradio: pip install -e ".[ui]"'
        if os.environ.get("CMIRM_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cmirm-cache")


def _invoke(args: list[str], cache: Path):
    result = CliRunner(env={"COLUMNS": "200", "CMIRM_CACHE": str(cache)}).invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache) -> Path:
    """``cmirm generate --tiny --report``: two instructions (one with markup in its text) x 4 candidates."""
    folder = tmp_path_factory.mktemp("tiny-run")
    prompts = folder / "prompts.jsonl"
    prompts.write_text(json.dumps({"text": XSS, "id": "xss"}) + "\n"
                       + json.dumps({"text": "fast drums and bass", "id": "drums"}) + "\n")
    run = folder / "run"
    _invoke(["generate", "--tiny", "--prompts", str(prompts), "-n", "4", "-k", "2", "--duration", "0.5",
             "--report", "--out", str(run)], cache)
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def _rows(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('table.candidates tbody tr')).map(r => r.dataset.id)")


def _file_of(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file", url
    return Path(unquote(parsed.path))


def _console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_generate_report_writes_the_report(tiny_run: Path):
    """``cmirm generate --report`` (no browser needed): the pages exist and their players point at the run's clips."""
    ranking = read_records(tiny_run / "ranking.jsonl")
    report = tiny_run / "report"
    assert (report / "index.html").is_file()
    for instruction in ("xss", "drums"):
        page = (report / "i" / f"{instruction}.html").read_text(encoding="utf-8")
        clips = [r["audio_path"] for r in ranking if r["instruction"]["id"] == instruction]
        assert len(clips) == 4 and all(f'src="../../{clip}"' in page for clip in clips)


def test_report_players_sorting_and_escaping(browser_ready, tiny_run: Path):
    report = tiny_run / "report"
    ranking = {r["id"]: r for r in read_records(tiny_run / "ranking.jsonl")}
    from selenium.webdriver.common.by import By

    with chromium() as driver:
        driver.get((report / "index.html").as_uri())
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "table.instructions tbody tr"))
        rows = driver.find_elements(By.CSS_SELECTOR, "table.instructions tbody tr")
        assert len(rows) == 2
        assert "tiny-v2" in driver.find_element(By.CSS_SELECTOR, ".settings").text   # run.json's settings
        driver.find_element(By.LINK_TEXT, "xss").click()
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "table.candidates tbody tr"))

        # The instruction's markup is shown as text and never runs.
        assert driver.execute_script("return window.__pwned") is None
        assert "<script>window.__pwned = 1</script>" in driver.find_element(By.CSS_SELECTOR, ".instruction").text
        assert not _console_errors(driver)

        # One player per candidate, each pointing at the candidate's file in the run.
        audios = driver.find_elements(By.CSS_SELECTOR, "table.candidates audio")
        ids = _rows(driver)
        assert len(audios) == len(ids) == 4
        for audio, candidate in zip(audios, ids):
            path = _file_of(audio.get_attribute("src"))
            assert path.is_file() and path.resolve() == (tiny_run / ranking[candidate]["audio_path"]).resolve()
        # The browser can load the clip (the page's content policy lets local media through).
        state = driver.execute_script(
            "const a = arguments[0]; a.preload = 'auto'; a.load();"
            "return new Promise(r => { a.oncanplaythrough = () => r([a.readyState, a.duration]);"
            " a.onerror = () => r(['error', a.error && a.error.code]); });", audios[0])
        assert state[0] == 4 and state[1] == pytest.approx(0.5, abs=0.05)

        # Sorting by an axis the scorer named reorders the rows (best first, then toggles).
        axis = "alignment"
        values = {c: ranking[c]["scores"][axis] for c in ids}
        header = next(th for th in driver.find_elements(By.CSS_SELECTOR, "table.candidates th")
                      if th.text.startswith(axis))
        header.click()
        descending = sorted(ids, key=lambda c: -values[c])
        wait_for(driver, lambda d: _rows(d) == descending, message=f"rows not sorted by {axis}")
        header.click()
        wait_for(driver, lambda d: _rows(d) == descending[::-1])
        # The rank column sorts the same way as the ranking.
        next(th for th in driver.find_elements(By.CSS_SELECTOR, "table.candidates th") if th.text.startswith("rank")
             ).click()
        wait_for(driver, lambda d: [ranking[c]["rank"] for c in _rows(d)] == [4, 3, 2, 1])


def test_report_of_a_broken_run_shows_failures_and_missing_clips(browser_ready, tmp_path: Path):
    run = write_synthetic_run(tmp_path / "run", SyntheticRun(n_instructions=2, n_candidates=4, fail_every=3))
    gone = sorted((run / "candidates").glob("s00000_*.wav"))[0]
    gone.unlink()
    _invoke(["report", str(run)], tmp_path / "cache")
    from selenium.webdriver.common.by import By

    with chromium() as driver:
        driver.get((run / "report" / "i" / "s00000.html").as_uri())
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "table.candidates tbody tr"))
        failed = driver.find_elements(By.CSS_SELECTOR, "tr.failed")
        missing = driver.find_elements(By.CSS_SELECTOR, "tr.missing")
        assert len(failed) == 1 and "generation failed" in failed[0].text and "synthetic failure" in failed[0].text
        assert len(missing) == 1 and "audio file missing" in missing[0].text
        audios = driver.find_elements(By.CSS_SELECTOR, "table.candidates audio")
        assert len(audios) == 2 and all(_file_of(a.get_attribute("src")).is_file() for a in audios)
        assert not _console_errors(driver)


def test_report_index_pages_and_filters_instructions(browser_ready, tmp_path: Path):
    run = write_synthetic_run(tmp_path / "run", SyntheticRun(n_instructions=120, n_candidates=2))
    _invoke(["report", str(run)], tmp_path / "cache")
    from selenium.webdriver.common.by import By

    def visible(driver) -> list[str]:
        return driver.execute_script("return Array.from(document.querySelectorAll('table.instructions tbody tr'))"
                                     ".filter(r => !r.hidden).map(r => r.cells[0].dataset.v)")

    with chromium() as driver:
        driver.get((run / "report" / "index.html").as_uri())
        wait_for(driver, lambda d: len(visible(d)) == 50)
        assert visible(driver)[0] == "1.0" and "page 1 of 3" in driver.find_element(By.ID, "page-info").text
        driver.find_element(By.ID, "page-next").click()
        wait_for(driver, lambda d: visible(d)[0] == "51.0")
        driver.find_element(By.ID, "filter").send_keys("s00117")
        wait_for(driver, lambda d: visible(d) == ["118.0"])


_CHECKED = ("return Array.from(document.querySelectorAll('fieldset input[type=radio]')).filter(i => i.checked)"
            ".map(i => i.closest('fieldset').id + ':' + i.value)")


def _vote(driver, alignment: str, musicality: str, confidence: int, expected_votes: int) -> None:
    from selenium.webdriver.common.by import By

    for axis, choice in (("alignment", alignment), ("musicality", musicality)):
        driver.find_element(By.CSS_SELECTOR, f"#{axis}-choice label[data-testid='{choice}-radio-label']").click()
        driver.find_element(By.CSS_SELECTOR,
                            f"#{axis}-confidence label[data-testid='{confidence}-radio-label']").click()
    driver.find_element(By.ID, "submit").click()
    wait_for(driver, lambda d: f"{expected_votes} vote(s) so far" in d.find_element(By.ID, "status").text,
             message=f"vote {expected_votes} was not recorded")
    assert "Vote recorded." in driver.find_element(By.ID, "message").text
    # The next pair starts with no answer given and the default confidence.
    wait_for(driver, lambda d: d.execute_script(_CHECKED) == ["alignment-confidence:3", "musicality-confidence:3"],
             message="the answers were not reset for the next pair")


def _open_review(driver, url: str, voter: str | None) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for(driver, lambda d: "vote(s) so far" in d.find_element(By.ID, "status").text)
    wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#instruction textarea, #instruction input")
             .get_attribute("value"))
    if voter:
        box = driver.find_element(By.CSS_SELECTOR, "#voter input, #voter textarea")
        box.clear()
        box.send_keys(voter + "\t")   # leaving the box: the app picks the first pair this voter has not voted on
        wait_for(driver, lambda d: f" by {voter})" in d.find_element(By.ID, "status").text)


def test_review_votes_by_clicking_train_on_them_and_survive_a_restart(review_ready, tiny_run: Path, tmp_path: Path,
                                                                      cache: Path):
    run = _copy(tiny_run, tmp_path)
    with review_server(run, ["--seed", "0"]) as url, chromium((1400, 1400)) as driver:
        _open_review(driver, url, "ana")
        assert driver.execute_script("return window.__pwned") is None
        _vote(driver, "A", "B", 4, 1)
        _vote(driver, "neither", "A", 2, 2)
        _vote(driver, "both", "B", 5, 3)
        from selenium.webdriver.common.by import By

        assert "Reward model agreed with the A/B votes on alignment" in driver.find_element(By.ID, "status").text

    rows = read_records(run / VOTES)
    assert len(rows) == 3
    assert [(r["preference-alignment"], r["preference-musicality"]) for r in rows] == [
        ("model_a", "model_b"), ("neither", "model_a"), ("both", "model_b")]
    assert [r["confidence_preference-alignment"] for r in rows] == [4, 2, 5]
    assert {r["voter"] for r in rows} == {"ana"}
    assert len({frozenset((r["candidate-a"], r["candidate-b"])) for r in rows}) == 3
    for row in rows:
        assert (run / row["audio-path"]).is_file() and (run / row["audio2"]).is_file()
        assert row["audio-path"] == f"candidates/{row['candidate-a']}.wav"

    pairs = load_pairs(run / VOTES)     # the training reader, default dataset root = the file's folder
    assert [p.labels for p in pairs.pairs] == [("model_a", "model_b"), ("both", "model_a"), ("both", "model_b")]
    out = tmp_path / "train"
    result = _invoke(["train", "--tiny", "--stage", "finetune", "--pairs", str(run / VOTES), "--out", str(out),
                      "--epochs", "1", "--no-progress"], cache)
    counts = re.search(r"pairs: (\d+) training, (\d+) held out", result.output)
    assert counts and int(counts[1]) + int(counts[2]) == 3, result.output
    assert (out / "last" / "model.safetensors").is_file(), result.output

    with review_server(run, ["--seed", "0"]) as url, chromium((1400, 1400)) as driver:
        _open_review(driver, url, None)
        from selenium.webdriver.common.by import By

        assert "3 vote(s) so far" in driver.find_element(By.ID, "status").text
        _open_review(driver, url, "ana")
        assert "(3 by ana)" in driver.find_element(By.ID, "status").text
        _vote(driver, "B", "B", 3, 4)
    rows = read_records(run / VOTES)
    assert len(rows) == 4 and len({frozenset((r["candidate-a"], r["candidate-b"])) for r in rows}) == 4


def test_review_refuses_a_vote_on_a_vanished_clip(review_ready, tiny_run: Path, tmp_path: Path):
    run = _copy(tiny_run, tmp_path)
    from selenium.webdriver.common.by import By

    with review_server(run, ["--seed", "1"]) as url, chromium((1400, 1400)) as driver:
        _open_review(driver, url, "bo")
        for wav in (run / "candidates").glob("*.wav"):
            wav.unlink()
        for axis in ("alignment", "musicality"):
            driver.find_element(By.CSS_SELECTOR, f"#{axis}-choice label[data-testid='A-radio-label']").click()
        driver.find_element(By.ID, "submit").click()
        wait_for(driver, lambda d: "Vote refused" in d.find_element(By.ID, "message").text)
        assert "no longer exists" in driver.find_element(By.ID, "message").text
    assert not (run / VOTES).exists() or read_records(run / VOTES) == []


def test_missing_browser_skips_unless_required(monkeypatch):
    import listen_browser

    monkeypatch.setattr(listen_browser, "browser_paths", lambda: None)
    monkeypatch.delenv("CMIRM_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium chromium-driver"):
        listen_browser.require_browser()
    monkeypatch.setenv("CMIRM_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="Chromium is not installed"):
        listen_browser.require_browser()
