"""``cmirm report``: a run directory as a static site that opens from disk (no server, no network).

Layout of the report folder (default ``RUN_DIR/report``)::

    index.html          the run's settings (run.json), counts, scaling curves, one row per instruction
                        (paged and filtered client-side; sortable by any column)
    i/<instruction>.html  one page per instruction: text, lyrics, reference player, and one row per
                        candidate: player, the selection scorer's axes as bars, composite, rank,
                        selected mark, seed, any further record fields (lineage, compute, ...), errors;
                        sortable by any column
    img/                copies of the scaling curve images (curve*.png, compute*.png)
    audio/              with ``--embed`` only: copies of every clip, so the folder can be shared

Every page is one file: CSS and JavaScript are inline (`assets/`), filled into `assets/page.html`
with `string.Template`. Every value from the run (instruction text, ids, errors, field values)
is HTML-escaped, and each page's Content-Security-Policy allows only its own script (by hash), so
an instruction text holding markup stays text. Audio is linked relative to the page (a link into
the run directory, or into ``audio/`` with ``embed``); a clip whose file is gone, or a candidate
whose generation failed, is shown as such instead of a player. Pages per instruction keep large
runs (1,000 instructions x 16 candidates) light: the index holds no players, and each page's
players load nothing until played (``preload="none"``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.records import Instruction, format_score
from rerank.listen.run_view import ListenCandidate, ListenRun, load_listen_run

#: Image files of a run or scaling folder that the index shows.
CURVE_PATTERNS = ("curve*.png", "compute*.png")
#: Instructions per index page.
PAGE_SIZE = 50
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LIST_ITEMS_SHOWN = 8


@dataclass(frozen=True)
class ReportConfig:
    """What ``cmirm report`` renders: ``run`` into ``out`` (default ``RUN/report``).

    ``embed`` copies the clips into ``out/audio``; ``scaling`` are further folders whose curve
    images (``cmirm scaling --out``) are shown; ``scorer`` picks the scorer whose axes are drawn
    (default the ranking's / the run's reward model).
    """

    run: Path
    out: Path | None = None
    embed: bool = False
    scaling: Sequence[Path] = ()
    scorer: str | None = None
    page_size: int = PAGE_SIZE

    def __post_init__(self) -> None:
        if self.page_size < 1:
            raise ConfigError(f"report page size must be >= 1, got {self.page_size}")
        for folder in self.scaling:
            if not Path(folder).is_dir():
                raise ConfigError(f"--scaling '{folder}': not a directory (give a `cmirm scaling --out` folder)")

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else Path(self.run) / "report"


@dataclass(frozen=True)
class ReportResult:
    """What `write_report` wrote."""

    index: Path
    pages: int
    candidates: int
    audio_missing: int
    images: int
    bytes: int


def esc(value: Any) -> str:
    """``value`` as HTML text (also safe inside a quoted attribute)."""
    return html.escape(str(value), quote=True)


def page_name(instruction_id: str) -> str:
    """The file name of an instruction's page: its id when file-name safe, else a hash of it."""
    if _SAFE_NAME.match(instruction_id):
        return f"{instruction_id}.html"
    return f"i{hashlib.sha1(instruction_id.encode()).hexdigest()[:16]}.html"


def _href(target: Path, page_dir: Path) -> str:
    """``target`` as a relative, percent-encoded, HTML-escaped link from a page in ``page_dir``."""
    rel = os.path.relpath(os.path.abspath(target), os.path.abspath(page_dir))
    return esc("/".join(quote(part) for part in rel.split(os.sep)))


def _fmt(value: float | None) -> str:
    return "–" if value is None else format_score(value)


def _compact(value: Any) -> str:
    """A field value for a table: strings as they are, long lists as their length, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and len(value) > _LIST_ITEMS_SHOWN:
        return f"[{len(value)} items]"
    return json.dumps(value, ensure_ascii=False, default=str)


def _kv(mapping: Mapping[str, Any]) -> str:
    rows = "".join(f"<dt>{esc(key)}</dt><dd>{esc(_compact(value))}</dd>" for key, value in mapping.items())
    return f'<dl class="kv">{rows}</dl>'


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _num(value: Any) -> float | None:
    """A finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class _Pages:
    """The page template with the inline CSS and JavaScript, and the policy that lets only that script run."""

    def __init__(self) -> None:
        assets = resources.files("rerank.listen") / "assets"
        self.template = Template((assets / "page.html").read_text(encoding="utf-8"))
        self.css = (assets / "report.css").read_text(encoding="utf-8")
        self.js = (assets / "report.js").read_text(encoding="utf-8")
        # The hash covers the script element's exact content: the template puts the code between newlines.
        digest = base64.b64encode(hashlib.sha256(f"\n{self.js}\n".encode()).digest()).decode()
        self.csp = (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
                    "img-src 'self' file: data:; media-src 'self' file: blob:")

    def render(self, title: str, body: str) -> str:
        return self.template.substitute(title=esc(title), csp=self.csp, css=self.css, js=self.js, body=body)


@dataclass
class _Writer:
    """Writes files under the report folder, counting bytes; links or copies audio (``embed``)."""

    out: Path
    embed: bool
    bytes: int = 0
    copied: dict[Path, Path] = field(default_factory=dict)

    def write(self, relative: str, text: str) -> Path:
        path = self.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        path.write_bytes(data)
        self.bytes += len(data)
        return path

    def copy(self, source: Path, relative: str) -> Path:
        """``source`` copied to ``out/relative`` (kept when a copy of the same size and time is there)."""
        target = self.out / relative
        if source not in self.copied:
            target.parent.mkdir(parents=True, exist_ok=True)
            stat = source.stat()
            if not (target.is_file() and (target.stat().st_size, target.stat().st_mtime_ns)
                    == (stat.st_size, stat.st_mtime_ns)):
                shutil.copy2(source, target)
            self.copied[source] = target
        return self.copied[source]

    def audio(self, source: Path, embed_name: str, page_dir: Path) -> str:
        """The link to a clip from a page in ``page_dir``: into the run, or to its copy in ``audio/``."""
        target = self.copy(source, f"audio/{embed_name}") if self.embed else source
        return _href(target, page_dir)


def _player(href: str, label: str) -> str:
    return f'<audio controls preload="none" src="{href}" aria-label="{esc(label)}"></audio>'


def _audio_cell(candidate: ListenCandidate, writer: _Writer, page_dir: Path) -> str:
    if candidate.audio is None:
        return '<span class="failed-audio">generation failed: no audio</span>'
    if not candidate.playable:
        return f'<span class="missing-audio">audio file missing: {esc(candidate.view.audio_path)}</span>'
    return _player(writer.audio(candidate.audio, candidate.audio.name, page_dir), candidate.id)


def _ref_block(instruction: Instruction, writer: _Writer, page_dir: Path, slug: str) -> str:
    ref = instruction.to_dict()["ref_audio"]
    if not ref:
        return ""
    path = Path(ref)
    if not path.is_file():
        return f'<p>Reference: <span class="missing-audio">file missing: {esc(ref)}</span></p>'
    player = _player(writer.audio(path, f"ref-{slug}{path.suffix}", page_dir), "reference")
    return f'<p>Reference: {player} <span class="muted">{esc(path.name)}</span></p>'


@dataclass(frozen=True)
class _Columns:
    """The score columns of the run: the selection scorer's axes (bars, run-wide ranges) and other scorers'."""

    axes: tuple[str, ...]
    ranges: dict[str, tuple[float, float]]
    others: list[tuple[str, str]]

    @classmethod
    def of(cls, run: ListenRun) -> "_Columns":
        ranges: dict[str, tuple[float, float]] = {}
        for candidate in run.candidates:
            scores = run.scores(candidate)
            for axis in run.axes if scores else ():
                lo, hi = ranges.get(axis, (math.inf, -math.inf))
                ranges[axis] = (min(lo, scores[axis]), max(hi, scores[axis]))
        others = sorted({(scorer, axis) for c in run.candidates for scorer, scores in c.view.scores.items()
                         if scorer != run.scorer for axis in scores.axes})
        return cls(run.axes, ranges, others)

    def bar(self, axis: str, value: float | None) -> str:
        if value is None:
            return '<td class="num" data-v="">–</td>'
        lo, hi = self.ranges[axis]
        width = 100.0 if hi <= lo else (value - lo) / (hi - lo) * 100.0
        return (f'<td class="num score" data-v="{value!r}"><span class="bar"><i style="width:{width:.1f}%"></i>'
                f'</span>{_fmt(value)}</td>')


def _num_cell(value: Any, text: str | None = None) -> str:
    number = _num(value)
    shown = text if text is not None else ("–" if value is None else esc(_compact(value)))
    return f'<td class="num" data-v="{"" if number is None else repr(number)}">{shown}</td>'


def _text_cell(value: Any, inner: str | None = None) -> str:
    text = "" if value is None else _compact(value)
    return f'<td data-v="{esc(text)}">{inner if inner is not None else esc(text)}</td>'


def _errors(errors: Sequence[str]) -> str:
    if not errors:
        return "<td></td>"
    items = "".join(f"<li>{esc(e)}</li>" for e in errors)
    return f'<td data-v="{len(errors)}"><ul class="errors">{items}</ul></td>'


def _th(label: str, kind: str | None = "num", title: str | None = None) -> str:
    sort = f' data-type="{kind}"' if kind else ""
    tip = f' title="{esc(title)}"' if title else ""
    return f"<th{sort}{tip}>{esc(label)}</th>"


def _common(values: Iterable[Any]) -> tuple[bool, Any]:
    """(True, v) when every value equals v."""
    values = list(values)
    same = all(v == values[0] for v in values[1:]) if values else False
    return same, (values[0] if values else None)


def _candidate_table(run: ListenRun, candidates: list[ListenCandidate], columns: _Columns, writer: _Writer,
                     page_dir: Path) -> str:
    extras = [c.extras() for c in candidates]
    scalar_keys = sorted({k for e in extras for k, v in e.items() if _is_scalar(v)}
                         - {k for e in extras for k, v in e.items() if not _is_scalar(v)})
    other_keys = sorted({k for e in extras for k in e} - set(scalar_keys))
    same_params, _ = _common(c.view.params for c in candidates)
    same_generator, _ = _common(c.view.generator for c in candidates)
    head = [_th("#", title="candidate index (seed order)"), _th("selected"), _th("rank"),
            _th("candidate", "text"), _th("seed"), _th("audio", None)]
    head += [_th(axis, title=f"{axis} ({run.scorer})") for axis in columns.axes]
    head += [_th("composite", title=f"policy {run.policy}" if run.policy else None)]
    head += [_th(f"{axis} · {scorer}", title=f"{axis} by {scorer}") for scorer, axis in columns.others]
    head += [_th("duration")]
    head += [_th(key, "text" if any(isinstance(e.get(key), str) for e in extras) else "num") for key in scalar_keys]
    head += ([] if same_generator else [_th("generator", "text")]) + ([] if same_params else [_th("params", None)])
    head += ([_th("more fields", None)] if other_keys else []) + [_th("errors")]
    rows = []
    for candidate, extra in zip(candidates, extras):
        scores = run.scores(candidate)
        classes = [name for name, on in (("selected", candidate.selected), ("failed", candidate.audio is None),
                                         ("missing", candidate.audio_missing)) if on]
        cells = [_num_cell(candidate.view.index), _num_cell(int(candidate.selected),
                                                            '<span class="star" title="selected">★</span>'
                                                            if candidate.selected else ""),
                 _num_cell(candidate.rank), _text_cell(candidate.id, f"<code>{esc(candidate.id)}</code>"),
                 _num_cell(candidate.view.seed), f"<td>{_audio_cell(candidate, writer, page_dir)}</td>"]
        cells += [columns.bar(axis, scores[axis] if scores else None) for axis in columns.axes]
        cells += [_num_cell(candidate.composite, _fmt(_num(candidate.composite)))]
        for scorer, axis in columns.others:
            other = candidate.view.scores.get(scorer)
            value = other[axis] if other is not None and axis in other.axes else None
            cells.append(_num_cell(value, _fmt(value)))
        duration = candidate.view.duration
        cells.append(_num_cell(duration, "–" if duration is None else f"{duration:.2f} s"))
        for key in scalar_keys:
            value = extra.get(key)
            cells.append(_text_cell(value) if isinstance(value, str) else _num_cell(value))
        if not same_generator:
            cells.append(_text_cell(candidate.view.generator))
        if not same_params:
            cells.append(f"<td><code>{esc(_compact(candidate.view.params))}</code></td>")
        if other_keys:
            cells.append("<td>" + _kv({k: extra[k] for k in other_keys if k in extra}) + "</td>")
        cells.append(_errors(candidate.errors()))
        rows.append(f'<tr class="{" ".join(classes)}" data-id="{esc(candidate.id)}">{"".join(cells)}</tr>')
    return (f'<table class="sortable candidates"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _instruction_page(run: ListenRun, instruction: Instruction, candidates: list[ListenCandidate],
                      columns: _Columns, writer: _Writer, nav: tuple[str | None, str | None]) -> str:
    page_dir = writer.out / "i"
    slug = page_name(instruction.id)[: -len(".html")]
    links = ['<a href="../index.html">← all instructions</a>']
    links += [f'<a href="{esc(target)}">{label}</a>'
              for target, label in zip(nav, ("‹ previous", "next ›")) if target]
    generated = sum(c.audio is not None for c in candidates)
    text = (f'<div class="text">{esc(instruction.text)}</div>' if instruction.text
            else '<div class="text muted">(no text)</div>')
    lyrics = f'<h3>Lyrics</h3><pre class="lyrics">{esc(instruction.lyrics)}</pre>' if instruction.lyrics else ""
    same_params, params = _common(c.view.params for c in candidates)
    same_generator, generator = _common(c.view.generator for c in candidates)
    shared = {**({"generator": generator} if same_generator else {}), **({"params": params} if same_params else {})}
    body = (f"<nav>{' '.join(links)}</nav>"
            f'<h1>Instruction <code>{esc(instruction.id)}</code> <span class="badge">{esc(instruction.modality)}'
            f'</span></h1>'
            f'<div class="instruction">{text}{lyrics}{_ref_block(instruction, writer, page_dir, slug)}</div>'
            f'<p class="muted">{generated}/{len(candidates)} generated · '
            f'{sum(run.scores(c) is not None for c in candidates)} scored by <code>{esc(run.scorer or "-")}</code>'
            f'{" · policy " + esc(run.policy) if run.policy else ""}'
            f'{" · k " + esc(run.k) if run.k is not None else ""}. Click a column to sort.</p>'
            + (_kv(shared) if shared else "")
            + _candidate_table(run, candidates, columns, writer, page_dir))
    return body


def _index_table(run: ListenRun, groups: list[tuple[Instruction, list[ListenCandidate]]], columns: _Columns,
                 page_size: int) -> str:
    head = [_th("#"), _th("instruction", "text"), _th("modality", "text"), _th("generated"), _th("errors"),
            _th("selected")]
    head += [_th(f"best {axis}", title=f"highest {axis} among the instruction's candidates") for axis in columns.axes]
    head += [_th("rank-1 composite")]
    rows = []
    for number, (instruction, candidates) in enumerate(groups, start=1):
        excerpt = " ".join((instruction.text or instruction.lyrics or "").split())[:160]
        link = (f'<a href="i/{esc(page_name(instruction.id))}">{esc(instruction.id)}</a>'
                f'<span class="excerpt">{esc(excerpt)}</span>')
        scored = [s for s in (run.scores(c) for c in candidates) if s is not None]
        top = next((c for c in candidates if c.rank == 1), None)
        cells = [_num_cell(number), _text_cell(f"{instruction.id} {excerpt}", link),
                 _text_cell(instruction.modality),
                 _num_cell(sum(c.audio is not None for c in candidates),
                           f"{sum(c.audio is not None for c in candidates)}/{len(candidates)}"),
                 _num_cell(sum(bool(c.errors()) for c in candidates)),
                 _num_cell(sum(c.selected for c in candidates))]
        cells += [columns.bar(axis, max(s[axis] for s in scored) if scored else None) for axis in columns.axes]
        cells += [_num_cell(top.composite if top else None, _fmt(_num(top.composite) if top else None))]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    pager = ('<div class="pager"><input id="filter" type="search" placeholder="filter instructions…" '
             'aria-label="filter instructions"><button id="page-prev" type="button">‹ previous</button>'
             '<span id="page-info"></span><button id="page-next" type="button">next ›</button></div>')
    return (pager + f'<table class="sortable instructions" data-page-size="{page_size}"><thead><tr>'
            f'{"".join(head)}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _curve_images(run_root: Path, scaling: Sequence[Path], writer: _Writer) -> list[tuple[Path, Path]]:
    """(source, copy) of every curve image of the run folder and the scaling folders."""
    found = []
    for number, folder in enumerate([run_root, *map(Path, scaling)]):
        for pattern in CURVE_PATTERNS:
            for image in sorted(folder.glob(pattern)):
                found.append((image, writer.copy(image, f"img/{number}-{image.name}")))
    return found


def _index_page(run: ListenRun, groups: list[tuple[Instruction, list[ListenCandidate]]], columns: _Columns,
                images: list[tuple[Path, Path]], config: ReportConfig, writer: _Writer) -> str:
    settings = run.config.to_dict() if run.config is not None else {}
    sections = "".join(f"<section><h3>{esc(name)}</h3>{_kv(values)}</section>"
                       for name, values in settings.items() if isinstance(values, Mapping) and values)
    counts = {
        "instructions": len(groups), "candidates": len(run.candidates),
        "generated": sum(c.audio is not None for c in run.candidates),
        "generation failed": sum(c.audio is None for c in run.candidates),
        "scored": sum(run.scores(c) is not None for c in run.candidates),
        "audio missing": sum(c.audio_missing for c in run.candidates),
        "selection scorer": run.scorer or "-", "axes": ", ".join(run.axes) or "-",
        "policy": run.policy or "-", "k": "-" if run.k is None else run.k,
    }
    figures = "".join(f'<figure><img loading="lazy" src="{_href(copy, writer.out)}" alt="{esc(source.name)}">'
                      f"<figcaption>{esc(source)}</figcaption></figure>" for source, copy in images)
    curves = f'<h2>Scaling curves</h2><div class="curves">{figures}</div>' if figures else ""
    return (f'<h1>cmirm run <code>{esc(run.root.resolve().name)}</code></h1>'
            f'<p class="muted">{esc(run.root.resolve())}</p>'
            f'<div class="settings"><section><h3>summary</h3>{_kv(counts)}</section>{sections}</div>'
            f"{curves}<h2>Instructions</h2>" + _index_table(run, groups, columns, config.page_size))


def write_report(config: ReportConfig) -> ReportResult:
    """Render ``config.run`` into ``config.out_dir``: ``index.html`` and one page per instruction."""
    run = load_listen_run(config.run, config.scorer)
    pages = _Pages()
    writer = _Writer(config.out_dir.resolve(), config.embed)
    writer.out.mkdir(parents=True, exist_ok=True)
    columns = _Columns.of(run)
    groups = run.instructions()
    names = [page_name(instruction.id) for instruction, _ in groups]
    for number, (instruction, candidates) in enumerate(groups):
        nav = (names[number - 1] if number > 0 else None, names[number + 1] if number + 1 < len(groups) else None)
        body = _instruction_page(run, instruction, candidates, columns, writer, nav)
        writer.write(f"i/{names[number]}", pages.render(f"{instruction.id} · cmirm report", body))
    images = _curve_images(run.root, config.scaling, writer)
    index = writer.write("index.html", pages.render(f"{run.root.resolve().name} · cmirm report",
                                                    _index_page(run, groups, columns, images, config, writer)))
    return ReportResult(index, len(groups), len(run.candidates), sum(c.audio_missing for c in run.candidates),
                        len(images), writer.bytes)
