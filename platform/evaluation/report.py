"""One report of any number of content types' evaluations: eval.md (a summary, then a section
per content type, or per material where one has two), eval-<section>.png (its precision-recall
curves) and eval.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .core import EvalResult

TITLES = {"photo": "Photo", "photographs": "Photo: real photographs", "video": "Video", "audio": "Audio", "text": "Text"}


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(map(str, r)) + " |" for r in rows)]


def _served_cells(row: dict) -> list[str]:
    return [_num(row["recall_at_threshold"]), _num(row["precision_at_threshold"]), str(row["answered_false"])]


def _threshold(result: EvalResult, name: str) -> str:
    return "the fusion's" if name == "combined" else f"{result.thresholds[name]:g}"


def section(result: EvalResult, png: str) -> list[str]:
    summary = result.summary()
    names = list(result.rankings)
    counts = summary["counts"]
    lines = [f"## {TITLES.get(result.name, result.name)}", "", *result.notes, "",
             *_table(["", *counts], [["count", *map(str, counts.values())]]), ""]
    rows = []
    for name, row in summary["signals"].items():
        at = "-" if row["distance_at_p99"] is None or name == "combined" else f"{row['distance_at_p99']:.4g}"
        rows.append([name, _num(row["micro_ap"]), _num(row["recall_at_p90"]), _num(row["recall_at_p99"]), at, _threshold(result, name),
                     *_served_cells(row)])
    lines += _table(["signal", "µAP", "recall @ precision 0.90", "recall @ precision 0.99", "distance @ precision 0.99",
                     "served threshold", "recall at it", "precision at it", "false matches at it"], rows)
    if "combined" in names:
        lines += ["", f"Combined: one calibrated fusion of the signals' distances (`platform/fusion.py`), {summary['combined_by']}; "
                  "its served decision is the fusion's own threshold."]
    lines += ["", f"![{result.name} precision-recall]({png})", "",
              "Per edit, the ranking: µAP of that edit's queries (its edited copies and edited distractors) and the copies' "
              "recall at the whole suite's precision-0.99 threshold."]
    retrieval = summary["retrieval_recall"]
    if retrieval:
        lines += [f"Retrieval recall@{summary['retrieval_k']}: the share of the edit's copies whose original was among the "
                  f"candidates verified (each searched signal's {summary['retrieval_k']} nearest within the verifier's radius)."]
    retrieval_header = [f"retrieval recall@{summary['retrieval_k']}"] if retrieval else []
    edit_rows = [[edit, "{} / {}".format(*result.edit_counts[edit]), *([_num(retrieval.get(edit))] if retrieval else []),
                  *(f"{_num(by[n]['micro_ap'])} / {_num(by[n]['recall_at_p99'])}" for n in names)]
                 for edit, by in summary["per_edit"].items()]
    lines += [""] + _table(["edit", "copies / distractors", *retrieval_header, *(f"{n} µAP / R@P99" for n in names)], edit_rows)
    lines += ["", "Per edit, at the served thresholds (what the service answers): the copies' recall, and the false matches "
              "(answers naming a wrong item, for copies and distractors alike).", ""]
    edit_rows = [[edit, *(f"{_num(by[n]['recall_at_threshold'])} / {by[n]['answered_false']}" for n in names)]
                 for edit, by in summary["per_edit"].items()]
    lines += _table(["edit", *(f"{n} recall / false" for n in names)], edit_rows)
    return lines


def _plot(result: EvalResult, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, r in result.rankings.items():
        recall, precision = r.curve()
        ax.plot(recall, precision, label=f"{name} (µAP {r.micro_ap():.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: EvalResult | Sequence[EvalResult], folder: Path, title: str, notes: Sequence[str] = ()) -> list[Path]:
    """eval.md (a summary table, then per content type its counts, signals, precision-recall
    plot and per-edit tables), eval-<section>.png each, and eval.json; returns the paths."""
    results = [results] if isinstance(results, EvalResult) else list(results)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary_rows = []
    for result in results:
        for name, row in result.summary()["signals"].items():
            summary_rows.append([TITLES.get(result.name, result.name), name, _num(row["micro_ap"]), _num(row["recall_at_p90"]),
                                 _num(row["recall_at_p99"]), *_served_cells(row)])
    lines = [f"# {title}", "", *notes, *([""] if notes else []),
             *_table(["content", "signal", "µAP", "recall @ precision 0.90", "recall @ precision 0.99", "recall at the served threshold",
                      "precision at it", "false matches at it"], summary_rows)]
    paths = [folder / "eval.md"]
    for result in results:
        png = folder / f"eval-{result.name}.png"
        _plot(result, png, f"{title}: {result.name}")
        paths.append(png)
        lines += ["", *section(result, png.name)]
    paths[0].write_text("\n".join(lines) + "\n")
    paths.append(folder / "eval.json")
    paths[-1].write_text(json.dumps({"title": title, "notes": list(notes), "results": {r.name: r.summary() for r in results}}, indent=1))
    return paths
