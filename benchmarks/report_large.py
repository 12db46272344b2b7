"""Report size and time for a large run: `cmirm report` of a synthetic I x N run (tones, random scores).

Writes the run (`rerank.listen.synthetic`) into a temporary folder, renders the report, and prints
the seconds taken to read and render, the number of pages, the index size, the largest and the
mean instruction page, and the total size.

Usage: python benchmarks/report_large.py [--instructions 1000] [--candidates 16] [--embed]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rerank.listen.report_html import ReportConfig, write_report
from rerank.listen.synthetic import SyntheticRun, write_synthetic_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instructions", type=int, default=1000)
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--embed", action="store_true", help="also copy every clip into the report")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run = write_synthetic_run(Path(tmp) / "run", SyntheticRun(args.instructions, args.candidates, fail_every=97))
        made = time.perf_counter() - started
        started = time.perf_counter()
        result = write_report(ReportConfig(run, embed=args.embed))
        rendered = time.perf_counter() - started
        pages = [p.stat().st_size for p in (result.index.parent / "i").glob("*.html")]
        print(f"run {args.instructions} x {args.candidates}: written in {made:.1f} s")
        print(f"report: {rendered:.1f} s, {result.pages} pages, index {result.index.stat().st_size / 1e3:.0f} kB, "
              f"pages max {max(pages) / 1e3:.1f} kB / mean {sum(pages) / len(pages) / 1e3:.1f} kB, "
              f"total {result.bytes / 1e6:.1f} MB of HTML")


if __name__ == "__main__":
    main()
