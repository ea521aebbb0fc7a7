"""What the benchmark scripts share: Markdown tables."""

from __future__ import annotations

import sys

import numpy as np


def fmt(x, digits=3):
    return "n/a" if isinstance(x, float) and np.isnan(x) else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(fmt(c) for c in row) + " |")
    sys.stdout.flush()
