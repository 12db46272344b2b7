"""Paper-ready PNG plots of scaling curves.

- `plot_curves` (`rerank.scaling.ScalingCurves`): one panel per reported axis (e.g. alignment,
  musicality, composite), N on a log2 x axis, one line per modality ("all" in black) with its
  bootstrap band shaded.
- `plot_compute_curves` (`rerank.search.curves.ComputeRow`s, ``compute.png``): reward against
  compute, one panel per compute axis (generated audio seconds, work units, ...), one line per
  search method with its bootstrap band over instructions, each point labelled with its budget.

The figures have a fixed size and dpi, so every PNG is exactly `PNG_SIZE` pixels. Rendering uses
the Agg canvas directly and never touches pyplot's global state, so it is safe in servers and tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from cmirm_plugin.errors import CmirmError
from cmirm_plugin.records import MODALITIES
from rerank.scaling import ALL, COMPOSITE, ScalingCurves
from rerank.search.curves import COMPUTE_AXES, ComputeRow

#: Figure size in inches and resolution; the PNG is FIGSIZE * DPI pixels.
FIGSIZE = (12.0, 4.0)
DPI = 100
#: (width, height) of the written PNG in pixels.
PNG_SIZE = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))

#: A fixed colour per modality, so figures of different runs agree.
COLORS = {ALL: "black", **dict(zip(MODALITIES, ("tab:blue", "tab:orange", "tab:green", "tab:red")))}


def plot_curves(curves: ScalingCurves, path: str | Path, *, k: int = 1) -> Path:
    """Draw the curves for one ``k`` (1 = best-of-N) and save them as a PNG at ``path``."""
    if k not in curves.ks:
        raise CmirmError(f"no curves for k={k}; available k: {', '.join(map(str, curves.ks))}")
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, len(curves.axes), sharex=True, squeeze=False)[0]
    quantity = "best-of-N" if k == 1 else f"mean of top-{k} of N"
    for panel, axis in zip(panels, curves.axes):
        for modality in curves.modalities:
            rows = curves.where(k=k, axis=axis, modality=modality)
            ns = [row.n for row in rows]
            color = COLORS[modality]
            panel.plot(ns, [row.mean for row in rows], marker="o", markersize=3, color=color,
                       linewidth=2.0 if modality == ALL else 1.2, zorder=3 if modality == ALL else 2,
                       label=f"{modality} (n={rows[0].n_instructions})")
            panel.fill_between(ns, [row.ci_low for row in rows], [row.ci_high for row in rows],
                               color=color, alpha=0.15, linewidth=0)
        panel.set_xscale("log", base=2)
        ticks = [n for n in curves.ns if n >= k]
        panel.xaxis.set_major_locator(FixedLocator(ticks))
        panel.xaxis.set_minor_locator(NullLocator())
        panel.set_xticklabels([str(n) for n in ticks])
        panel.set_xlabel("N candidates per instruction (log2 scale)")
        panel.set_ylabel(f"expected {axis} of {quantity}")
        panel.set_title(axis if axis != COMPOSITE else f"composite ({curves.policy})")
        panel.grid(True, alpha=0.3)
    panels[0].legend(title="modality", fontsize="small")
    figure.suptitle(f"policy {curves.policy}: select by {curves.selection_scorer}, "
                    f"evaluate with {curves.evaluation_scorer} ({curves.ci:.0%} bootstrap CI)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path


#: Colours of the search methods, in order of first appearance (best-of-N first when present).
METHOD_COLORS = ("black", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def plot_compute_curves(rows: Sequence[ComputeRow], path: str | Path, *,
                        compute_axes: Sequence[str] = ("audio_seconds", "work_units", "total_seconds"),
                        title: str | None = None) -> Path:
    """Draw reward against compute, one panel per compute axis and one line per method, and save a PNG.

    Compute axes that some row lacks (e.g. work units of external commands) are left out; x is
    log2-scaled. Raises `CmirmError` for an unknown axis or when no axis has values.
    """
    unknown = [axis for axis in compute_axes if axis not in COMPUTE_AXES]
    if unknown:
        raise CmirmError(f"unknown compute axis {unknown}; known: {', '.join(COMPUTE_AXES)}")
    axes = [axis for axis in compute_axes if rows and all(getattr(row, axis) is not None for row in rows)]
    if not axes:
        raise CmirmError(f"no compute axis among {list(compute_axes)} has values in every row")
    methods = list(dict.fromkeys(row.method for row in rows))
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, len(axes), squeeze=False)[0]
    for panel, axis in zip(panels, axes):
        for color, method in zip(METHOD_COLORS * len(methods), methods):
            points = sorted((row for row in rows if row.method == method), key=lambda row: getattr(row, axis))
            xs = [getattr(row, axis) for row in points]
            panel.plot(xs, [row.mean for row in points], marker="o", markersize=3, color=color, linewidth=1.5,
                       label=f"{method} (n={points[0].n_instructions})")
            panel.fill_between(xs, [row.ci_low for row in points], [row.ci_high for row in points], color=color,
                               alpha=0.15, linewidth=0)
            for x, row in zip(xs, points):
                panel.annotate(str(row.budget), (x, row.mean), textcoords="offset points", xytext=(3, -9),
                               fontsize="x-small", color=color)
        panel.set_xscale("log", base=2)
        panel.set_xlabel(COMPUTE_AXES[axis] + " (log2 scale)")
        panel.set_ylabel(f"{rows[0].reward} of the selected candidate")
        panel.grid(True, alpha=0.3)
    panels[0].legend(title="method (budget at each point)", fontsize="small")
    figure.suptitle(title or f"reward against compute per search method ({rows[0].reward}, bootstrap band)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path
