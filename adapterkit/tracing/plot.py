"""Heat maps of a causal trace: average indirect effect by token kind (rows) and layer (columns), one PNG per
kind, coloured as in the ROME paper's figures. matplotlib is the optional ``plot`` extra."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..files.atomic import atomic_path
from .trace import KIND_LABELS, TOKEN_KIND_LABELS, TraceResult

COLOURS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}


def plot_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def plot_trace(result: TraceResult, out_dir) -> list[Path]:
    """``out_dir/trace_<kind>.png`` for every traced kind; returns the paths written."""
    return [plot_kind(result, kind, Path(out_dir) / f"trace_{kind}.png") for kind in result.settings.kinds]


def plot_kind(result: TraceResult, kind: str, path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    effects = {t: row for t, row in result.effects(kind).items() if row is not None}
    # Negative effects are noise around the corrupted score; the paper's figures start the scale at 0 too.
    table = [[max(value, 0.0) for value in row] for row in effects.values()]
    figure = Figure(figsize=(max(4.0, 0.18 * result.num_layers + 2.5), 0.35 * len(table) + 1.4), dpi=150)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.pcolormesh(table, cmap=COLOURS[kind], vmin=0.0)
    axes.invert_yaxis()
    axes.set_yticks([i + 0.5 for i in range(len(table))], [TOKEN_KIND_LABELS[t] for t in effects])
    step = max(1, result.num_layers // 10)
    axes.set_xticks([i + 0.5 for i in range(0, result.num_layers, step)], [str(i) for i in range(0, result.num_layers, step)])
    if kind == "hidden":
        axes.set_xlabel("restored layer")
    else:
        axes.set_xlabel(f"centre of {result.settings.window} restored {KIND_LABELS[kind]} layers")
    name = f" in {Path(result.model).name}" if result.model else ""
    axes.set_title(f"Average indirect effect of the {KIND_LABELS[kind]}{name}, {len(result.facts)} facts", fontsize=9)
    if "subject_last" in effects:
        row = list(effects).index("subject_last")
        axes.plot([result.peak(kind) + 0.5], [row + 0.5], marker="*", color="orange", markersize=9, linestyle="none")
    figure.colorbar(image, ax=axes).set_label("effect on p(answer)")
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path
