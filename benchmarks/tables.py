"""What the evaluation scripts share: µAP of pooled predictions and Markdown tables."""

from __future__ import annotations

import sys

import numpy as np

from mediamatch.platform.evaluation import Ranking


def micro_ap(scores: np.ndarray, true: np.ndarray, n_true: int, rng: np.random.Generator) -> float:
    """AP of pooled predictions ranked globally by score (ties in random order), over all true pairs."""
    if n_true == 0:
        return float("nan")
    order = np.lexsort((rng.random(scores.size), -scores))
    return Ranking("", scores[order], true[order].astype(bool), n_true).micro_ap()


def fmt(x, digits=3):
    return "n/a" if isinstance(x, float) and np.isnan(x) else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(fmt(c) for c in row) + " |")
    sys.stdout.flush()
