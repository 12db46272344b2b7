"""`cmirm report`: the static pages, escaping, links, broken runs, generic fields, embedding, large runs."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from typer.testing import CliRunner

from cmirm_plugin.cli import app
from cmirm_plugin.errors import ConfigError
from cmirm_plugin.manifest import read_records, rewrite_records
from rerank.listen.report_html import ReportConfig, page_name, write_report
from rerank.listen.run_view import load_listen_run
from rerank.listen.synthetic import SCORER, SyntheticRun, write_synthetic_run

pytestmark = pytest.mark.timeout(300)

_SRC = re.compile(r'<td><audio [^>]*src="([^"]+)"')   # candidates' players (not the reference)


def _sources(page: Path) -> list[Path]:
    """The files the page's players point at (resolved against the page's folder)."""
    text = page.read_text(encoding="utf-8")
    return [(page.parent / unquote(src.replace("&amp;", "&"))).resolve() for src in _SRC.findall(text)]


def _rows(page: Path) -> list[str]:
    return re.findall(r'<tr class="[^"]*" data-id="([^"]+)"', page.read_text(encoding="utf-8"))


def test_report_pages_players_and_settings(tmp_path: Path):
    run = write_synthetic_run(tmp_path / "run", SyntheticRun(n_instructions=3, n_candidates=4))
    result = write_report(ReportConfig(run))
    out = run / "report"
    assert result.index == (out / "index.html").resolve() and result.pages == 3 and result.candidates == 12
    index = (out / "index.html").read_text(encoding="utf-8")
    assert index.count('href="i/s0000') == 3 and SCORER in index and "synthetic-tones" in index
    for instruction in ("s00000", "s00001", "s00002"):
        page = out / "i" / f"{instruction}.html"
        sources = _sources(page)
        assert sources == [(run / "candidates" / f"{c}.wav").resolve() for c in _rows(page)]
        assert all(path.is_file() for path in sources) and len(sources) == 4
    lyrics = (out / "i" / "s00001.html").read_text(encoding="utf-8")
    assert '<pre class="lyrics">line one of song 1\nline two</pre>' in lyrics
    with_ref = (out / "i" / "s00002.html").read_text(encoding="utf-8")
    assert 'aria-label="reference"' in with_ref and "tones/reference.wav" in with_ref
    ranking = {r["id"]: r for r in read_records(run / "ranking.jsonl")}
    page = (out / "i" / "s00000.html").read_text(encoding="utf-8")
    for candidate in _rows(out / "i" / "s00000.html"):
        record = ranking[candidate]
        assert f'data-v="{record["scores"]["alignment"]!r}"' in page
        assert f'data-v="{float(record["rank"])!r}"' in page
    assert page.count('class="star"') == 2   # k = 2 selected


def test_user_strings_are_escaped_and_only_the_page_script_may_run(tmp_path: Path):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quotes"'
    run = write_synthetic_run(tmp_path / "run", SyntheticRun(n_instructions=1, n_candidates=2, texts=[evil]))
    write_report(ReportConfig(run))
    for page in (run / "report" / "index.html", run / "report" / "i" / "s00000.html"):
        text = page.read_text(encoding="utf-8")
        assert "<script>alert" not in text and "<img src=x" not in text
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
        scripts = re.findall(r"<script>(.*?)</script>", text, flags=re.S)
        assert len(scripts) == 1
        digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
        assert f"script-src 'sha256-{digest}'" in text and "default-src 'none'" in text


def test_axes_are_the_scorers_and_extra_fields_are_shown(tmp_path: Path):
    run = write_synthetic_run(tmp_path / "run", SyntheticRun(n_instructions=1, n_candidates=3,
                                                              axes=("coherence", "groove", "timbre"), policy="zsum"))
    records = read_records(run / "ranking.jsonl")
    for number, record in enumerate(records):   # fields a search method may add
        record.update({"parent": f"c{number - 1}" if number else None, "step": number, "compute_s": 1.5 * number,
                       "lineage": {"method": "beam", "path": [number]}})
    rewrite_records(run / "ranking.jsonl", records)
    write_report(ReportConfig(run))
    page = (run / "report" / "i" / "s00000.html").read_text(encoding="utf-8")
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", page)
    assert {"coherence", "groove", "timbre", "parent", "step", "compute_s", "more fields"} <= set(headers)
    assert "alignment" not in headers and "musicality" not in headers
    assert '<td class="num" data-v="3.0">3.0</td>' in page and '<td data-v="c1">c1</td>' in page
    assert "&quot;method&quot;: &quot;beam&quot;" in page
    index = (run / "report" / "index.html").read_text(encoding="utf-8")
    assert "best coherence" in index and "best timbre" in index


def test_failed_candidates_and_missing_clips_are_shown_as_such(tmp_path: Path):
    run = write_synthetic_run(tmp_path / "run", SyntheticRun(n_instructions=2, n_candidates=4, fail_every=3))
    gone = run / "candidates" / "s00000_synthetic-tones_s0.wav"
    gone.unlink()
    result = write_report(ReportConfig(run))
    assert result.audio_missing == 1
    page = run / "report" / "i" / "s00000.html"
    text = page.read_text(encoding="utf-8")
    assert text.count('<tr class="failed"') == 1 and "synthetic failure" in text and "generation failed" in text
    assert re.search(r'<tr class="[^"]*missing" data-id="s00000_synthetic-tones_s0"', text)
    assert "audio file missing: candidates/s00000_synthetic-tones_s0.wav" in text
    assert len(_sources(page)) == 2 and all(p.is_file() for p in _sources(page))
    index = (run / "report" / "index.html").read_text(encoding="utf-8")
    assert "generation failed" in index and "audio missing" in index


def test_embed_copies_clips_and_curves_are_included(tmp_path: Path):
    run = write_synthetic_run(tmp_path / "run", SyntheticRun(n_instructions=3, n_candidates=2))
    scaling = tmp_path / "scaling"
    scaling.mkdir()
    (run / "curve.png").write_bytes(b"\x89PNG run curve")
    (scaling / "curve_k2.png").write_bytes(b"\x89PNG scaling curve")
    (scaling / "compute.png").write_bytes(b"\x89PNG compute")
    out = tmp_path / "shared"
    result = write_report(ReportConfig(run, out, embed=True, scaling=(scaling,)))
    assert result.images == 3
    assert sorted(p.name for p in (out / "img").iterdir()) == ["0-curve.png", "1-compute.png", "1-curve_k2.png"]
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'src="img/0-curve.png"' in index and 'src="img/1-compute.png"' in index
    (run / "candidates").rename(tmp_path / "moved")   # the shared folder no longer needs the run
    for page in (out / "i").glob("*.html"):
        sources = _sources(page)
        assert sources and all(p.is_file() and p.parent == (out / "audio").resolve() for p in sources)
    assert (out / "audio" / "ref-s00002.wav").is_file()


def test_missing_scaling_folder_and_unknown_scorer_are_clear_errors(tmp_path: Path):
    run = write_synthetic_run(tmp_path / "run", SyntheticRun(n_instructions=1, n_candidates=2))
    with pytest.raises(ConfigError, match="--scaling .*not a directory"):
        ReportConfig(run, scaling=(tmp_path / "nope",))
    with pytest.raises(ConfigError, match="--scorer 'other'.*synthetic-v1"):
        load_listen_run(run, "other")
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert isinstance(result.exception, ConfigError) and "not a `cmirm generate` output directory" in str(
        result.exception)


def test_cli_report_and_odd_instruction_ids(tmp_path: Path):
    run = write_synthetic_run(tmp_path / "run", SyntheticRun(n_instructions=1, n_candidates=2))
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["report", str(run), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "1 instruction page(s), 2 candidate(s), 0 missing clip(s)" in result.output
    assert (tmp_path / "r" / "i" / "s00000.html").is_file()
    assert page_name("a/../b c") != page_name("a/../b d") and "/" not in page_name("a/../b c")


def test_a_1000_by_16_run_renders_in_pages_of_bounded_size(tmp_path: Path):
    run = write_synthetic_run(tmp_path / "run", SyntheticRun(n_instructions=1000, n_candidates=16, fail_every=97))
    result = write_report(ReportConfig(run))
    out = run / "report"
    pages = list((out / "i").glob("*.html"))
    assert result.pages == len(pages) == 1000 and result.candidates == 16000
    assert os.path.getsize(out / "index.html") < 1_500_000        # no players in the index
    assert max(os.path.getsize(p) for p in pages) < 64_000
    assert result.bytes < 40_000_000
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'data-page-size="50"' in index and index.split("<tbody>")[1].count("<tr>") == 1000
    assert len(_sources(out / "i" / "s00999.html")) == 16 - sum(
        1 for j in range(16) if (999 * 16 + j) % 97 == 96)
