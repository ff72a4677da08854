"""What a run writes at its end, from run.json and rows.jsonl alone: ``report.json`` (per metric before and after:
mean, 95 % confidence interval, count), ``summary.md`` (a Markdown table) and ``metrics.png`` (teacher-forced
metrics beside the probability and generation-based ones, with their intervals); and several runs side by side
(``adapterkit report``). The PNGs need matplotlib (the optional ``plot`` extra); without it they are left out and
summary.md says so."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ..errors import OutputError
from ..files.atomic import atomic_path, write_text_atomic
from .intervals import summarise_values

REPORT_FORMAT = "adapterkit-eval-report/1"
INTERVALS = ("95 % confidence intervals: Wilson's score interval for a metric whose every value is 0 or 1 (a "
             "proportion), else the normal approximation, mean +- 1.96 standard errors (sample standard deviation)")
KNOWN_ORDER = ("teacher_forced.rewrite_acc", "teacher_forced.rephrase_acc", "teacher_forced.portability_acc",
               "teacher_forced.locality_acc", "prob.efficacy_score", "prob.paraphrase_score", "prob.neighborhood_score",
               "greedy.rewrite_exact_match", "greedy.rewrite_starts_with", "greedy.rephrase_exact_match",
               "greedy.rephrase_starts_with", "greedy.locality_unchanged", "fluency.ngram_entropy", "general.perplexity")
# the after-edit values the plot sets side by side: (aspect, [(family, metric)])
PLOTTED = (
    ("rewrite", [("teacher-forced accuracy", "teacher_forced.rewrite_acc"), ("P(new) > P(true)", "prob.efficacy_score"),
                 ("greedy exact match", "greedy.rewrite_exact_match"), ("greedy starts with", "greedy.rewrite_starts_with")]),
    ("rephrase", [("teacher-forced accuracy", "teacher_forced.rephrase_acc"), ("P(new) > P(true)", "prob.paraphrase_score"),
                  ("greedy exact match", "greedy.rephrase_exact_match"), ("greedy starts with", "greedy.rephrase_starts_with")]),
    ("locality", [("teacher-forced accuracy", "teacher_forced.locality_acc"), ("P(new) > P(true)", "prob.neighborhood_score"),
                  ("greedy exact match", "greedy.locality_unchanged")]),
)
HEADLINE = ("teacher_forced.rewrite_acc", "greedy.rewrite_exact_match", "teacher_forced.rephrase_acc",
            "greedy.rephrase_exact_match", "teacher_forced.locality_acc", "greedy.locality_unchanged",
            "prob.efficacy_score", "prob.neighborhood_score")


def plot_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def metric_order(names) -> list[str]:
    """Known metrics in KNOWN_ORDER (a KnowEdit group after its metric), others after them by name."""
    def rank(name):
        base = name.split("/", 1)[0]
        return (KNOWN_ORDER.index(base) if base in KNOWN_ORDER else len(KNOWN_ORDER), name)
    return sorted(names, key=rank)


def build_report(run_info: dict, rows: list[dict]) -> dict:
    names = {name for row in rows for when in ("before", "after") for name in row["metrics"][when]}
    metrics = {}
    for name in metric_order(names):
        metrics[name] = {when: summarise_values(row["metrics"][when].get(name) for row in rows)
                         for when in ("before", "after")}
    units = {row["unit"]: row["general"]["perplexity"] for row in rows}
    metrics["general.perplexity"] = {when: summarise_values(p[when] for p in units.values()) for when in ("before", "after")}
    return {"format": REPORT_FORMAT, **run_info["identity"], "environment": run_info["environment"],
            "counts": {"requests": len(rows), "units": len(units)}, "intervals": INTERVALS,
            "perplexity_per": "unit (one value per edit or batch: the held-out texts after it)", "metrics": metrics}


def write_run_report(out, run_info: dict, rows: list[dict]) -> dict:
    out = Path(out)
    report = build_report(run_info, rows)
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    plotted = plot_available()
    if plotted:
        plot_run(report, out / "metrics.png")
    write_text_atomic(out / "summary.md", run_markdown(report, plotted))
    return report


# --- Markdown -------------------------------------------------------------------------------------
def formatted(summary: dict | None, metric: str = "") -> str:
    if summary is None:
        return "-"
    digits = (lambda v: f"{v:.4g}") if metric == "general.perplexity" or summary["mean"] > 1.5 else (lambda v: f"{v:.3f}")
    return f"{digits(summary['mean'])} [{digits(summary['ci_low'])}, {digits(summary['ci_high'])}]"


def describe_run(report: dict) -> list[tuple[str, str]]:
    settings, model, data = report["settings"], report["model"], report["data"]
    env = report["environment"]
    mode = "single edits, each undone before the next" if settings["mode"] == "single" else \
        f"batches of {settings['batch']} edits applied one after another, never undone (curve.jsonl)" \
        if settings["mode"] == "sequential" else f"batches of {settings['batch']} edits in one call, undone after each batch"
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    return [
        ("method", report["method"]),
        ("model", f"`{env['model_path']}` ({model['model_type']}, {model['parameters']:,} parameters, weights sha256 "
                  f"`{model['weights_sha256'][:16]}`)"),
        ("data", f"`{env['data_path']}` (sha256 `{data['sha256'][:16]}`), {report['counts']['requests']} requests"),
        ("mode", mode),
        ("chat template", "used: prompts are user turns, answers continue the assistant's turn" if report["chat_template"]
         else "not used: plain prompts"),
        ("greedy answers", f"up to {settings['max_new_tokens']} new tokens, stopping at end of sequence or a newline"),
        ("held-out texts", f"{report['heldout']['count']} from {report['heldout']['source']}"),
        ("versions", versions),
    ]


def run_markdown(report: dict, plotted: bool) -> str:
    lines = [f"# adapterkit eval: {report['method']} on `{Path(report['environment']['model_path']).name}`", "",
             "| | |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in describe_run(report)]
    lines += ["", "Mean [95 % confidence interval] over requests (perplexity: over edit units).", "",
              "| metric | before | after | n | interval |", "| --- | ---: | ---: | ---: | --- |"]
    for name, values in report["metrics"].items():
        present = values["after"] or values["before"]
        if present is None:
            continue
        lines.append(f"| `{name}` | {formatted(values['before'], name)} | {formatted(values['after'], name)} | "
                     f"{present['count']} | {present['interval']} |")
    lines += ["", INTERVALS + ".", ""]
    lines += ["![metrics after the edit](metrics.png)", ""] if plotted else \
        ["(No plot: install matplotlib, `pip install \"adapterkit[plot]\"`, for metrics.png.)", ""]
    return "\n".join(lines)


# --- plots ----------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=150)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def _bar(axes, x, summary, width, label, colour):
    mean = summary["mean"]
    axes.bar([x], [mean], width, label=label, color=colour,
             yerr=[[max(0.0, mean - summary["ci_low"])], [max(0.0, summary["ci_high"] - mean)]], capsize=3)  # rounding can put a bound a hair past the mean


def plot_run(report: dict, path) -> Path:
    """After-edit means with their intervals: per aspect (rewrite, rephrase, locality), teacher-forced accuracy
    beside the probability comparison and the greedy answers."""
    figure = _figure(7.0, 3.6)
    axes = figure.add_subplot()
    families = [family for _, pairs in PLOTTED for family, _ in pairs]
    families = list(dict.fromkeys(families))
    colours = dict(zip(families, ("#4c72b0", "#8172b2", "#dd8452", "#55a868")))
    width = 0.8 / len(families)
    labelled = set()
    for a, (aspect, pairs) in enumerate(PLOTTED):
        for family, metric in pairs:
            summary = report["metrics"].get(metric, {}).get("after")
            if summary is None:
                continue
            f = families.index(family)
            _bar(axes, a + (f - (len(families) - 1) / 2) * width, summary, width,
                 None if family in labelled else family, colours[family])
            labelled.add(family)
    axes.set_xticks(range(len(PLOTTED)), [aspect for aspect, _ in PLOTTED])
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("after the edit (95 % CI)")
    axes.set_title(f"{report['method']} on {Path(report['environment']['model_path']).name}, "
                   f"{report['counts']['requests']} requests", fontsize=9)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(figure, Path(path))


# --- several runs ---------------------------------------------------------------------------------
def load_report(run_dir) -> dict:
    from ..files.safe_load import load_json

    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise OutputError(f"{run_dir}: no report.json" + (" (the run has not finished)" if (Path(run_dir) / "run.json").is_file() else ""),
                          fix=f"pass directories written by `adapterkit eval --out DIR`; run `adapterkit eval ... --out {run_dir}` "
                              "again to finish an interrupted run")
    report = load_json(path, error=OutputError, what="eval report")
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise OutputError(f"{path}: not a report of `adapterkit eval` (format {REPORT_FORMAT})",
                          fix="pass directories written by `adapterkit eval --out DIR`")
    return report


def run_names(run_dirs) -> list[str]:
    names = [Path(d).name or str(d) for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def write_comparison(run_dirs, out) -> dict:
    """summary.md (after-edit metrics of every run, side by side), comparison.json and comparison.png in ``out``."""
    reports = [load_report(d) for d in run_dirs]
    names = run_names(run_dirs)
    metrics = metric_order({m for r in reports for m in r["metrics"]})
    comparison = {"runs": [{"name": n, "path": str(d), "method": r["method"], "mode": r["settings"]["mode"],
                            "batch": r["settings"]["batch"], "chat_template": r["chat_template"],
                            "requests": r["counts"]["requests"], "model_path": r["environment"]["model_path"],
                            "data_sha256": r["data"]["sha256"]} for n, d, r in zip(names, run_dirs, reports)],
                  "intervals": INTERVALS,
                  "metrics": {m: {n: r["metrics"].get(m, {}).get("after") for n, r in zip(names, reports)} for m in metrics}}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "comparison.json", json.dumps(comparison, indent=2) + "\n")
    plotted = plot_available()
    if plotted:
        plot_comparison(comparison, out / "comparison.png")
    write_text_atomic(out / "summary.md", comparison_markdown(comparison, plotted))
    return comparison


def comparison_markdown(comparison: dict, plotted: bool) -> str:
    runs = comparison["runs"]
    lines = ["# adapterkit eval: runs side by side", "", "| run | method | mode | chat template | requests | model |",
             "| --- | --- | --- | --- | ---: | --- |"]
    for r in runs:
        mode = "single edits" if r["mode"] == "single" else f"batches of {r['batch']}"
        lines.append(f"| {r['name']} | {r['method']} | {mode} | {'yes' if r['chat_template'] else 'no'} | "
                     f"{r['requests']} | `{r['model_path']}` |")
    if len({r["data_sha256"] for r in runs}) > 1:
        lines += ["", "The runs measured different data files (their sha256 differ)."]
    lines += ["", "After the edit: mean [95 % confidence interval].", "",
              "| metric | " + " | ".join(r["name"] for r in runs) + " |", "| --- |" + " ---: |" * len(runs)]
    for metric, values in comparison["metrics"].items():
        lines.append(f"| `{metric}` | " + " | ".join(formatted(values[r["name"]], metric) for r in runs) + " |")
    lines += ["", comparison["intervals"] + ".", ""]
    lines += ["![runs side by side](comparison.png)", ""] if plotted else \
        ["(No plot: install matplotlib, `pip install \"adapterkit[plot]\"`, for comparison.png.)", ""]
    return "\n".join(lines)


def plot_comparison(comparison: dict, path) -> Path:
    runs = [r["name"] for r in comparison["runs"]]
    metrics = [m for m in HEADLINE if any(comparison["metrics"].get(m, {}).get(n) for n in runs)]
    figure = _figure(max(6.0, 1.1 * len(metrics) + 2), 3.8)
    axes = figure.add_subplot()
    width = 0.8 / max(len(runs), 1)
    palette = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c")
    for j, name in enumerate(runs):
        labelled = False
        for i, metric in enumerate(metrics):
            summary = comparison["metrics"][metric].get(name)
            if summary is not None:
                _bar(axes, i + (j - (len(runs) - 1) / 2) * width, summary, width, None if labelled else name,
                     palette[j % len(palette)])
                labelled = True
    axes.set_xticks(range(len(metrics)), [m.replace(".", "\n", 1) for m in metrics], fontsize=6)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("after the edit (95 % CI)")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(figure, Path(path))
