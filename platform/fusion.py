"""One calibrated fusion of the per-signal evidence about a (query, banked entry) pair.

A pair's evidence is the distance each signal found it at (pdq bits over the query's dihedral
forms, the descriptor's cosine distance, `keypoints`' 1 - inliers / 100 of the verified fit),
within that signal's `radius` (the service's candidate radius: what it sees while verifying);
a signal that did not find the pair there gives none, and that absence is evidence too (a
candidate that does not verify is rarely a copy). The fusion is a logistic regression over,
per signal, its scaled distance (`feature`: keypoints on a log scale of inliers) and whether it
found the pair, fitted on held-out calibration pairs (`Fusion.fit`), so the fused score is the
probability that the pair is a copy. Each distance's weight is bounded at 0 from above: a
signal finding a pair closer never lowers its score. `threshold` is the fused score that kept
`precision` on the calibration pairs: the fused decision.

Why not the max of per-signal calibrated probabilities: it cannot use evidence against (a
descriptor neighbour that fails verification keeps the descriptor's probability), and it is
not safe either. Calibration is over the whole calibration suite and an edit is a slice of it:
a signal may rank one edit's copies perfectly at distances where, over the suite, it is often
wrong (calibrated 0.6), while another gives one of that edit's non-copies a distance where it
is usually right (0.9); the max puts that non-copy above the copies, and the edit's µAP falls
below the first signal's. The same holds for any fusion fitted over the suite, this one
included: that it loses to no single signal on any edit is measured (the eval's per-edit
tables; tests/test_fusion.py on the tiny material), not true by construction.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, Field

FUSED = "fused"  # the name of the fused photo decision in match answers and thresholds
# The fewest inliers that are evidence: fewer are chance fits of a non-copy's few ratio-test
# matches (as good as none). On the tiny material (tests/test_fusion.py), 6 to 10 lose to no
# signal on any edit, 5 and fewer let chance fits rank above the copies other signals find.
EVIDENCE_INLIERS = 8
# The regression's L2 penalty per pair: at 1e-3 it held the keypoints distance weight at 0 on
# the drawings (a fit of 10 inliers counted as one of 100); at 1e-5 it weighs the inliers
# (mediamatch eval's drawings, 25 + 25 x 19 edits: recall at precision 0.99 0.653 -> 0.880).
L2 = 1e-5


def feature(signal_type: str, distance: float) -> float:
    """A signal's distance as the fusion weighs it: keypoints' on a log scale of inliers (the
    first few inliers say far more than the fiftieth: non-copies hardly ever fit more than a
    handful), every other signal's as it is."""
    if signal_type == "keypoints":
        from .signals.keypoints import FULL_FIT, inliers_of

        return 1.0 - math.log1p(inliers_of(distance)) / math.log1p(FULL_FIT)
    return distance


class Fusion(BaseModel):
    radius: dict[str, float] = Field(default_factory=dict, description="per signal, the farthest distance that is evidence (the "
                                     "service's candidate radius); farther counts as not found")
    scales: dict[str, float] = Field(description="per signal, the distance that counts as 1 in its feature (the farthest it was fitted on)")
    weights: dict[str, float] = Field(default_factory=dict, description="per signal, on its scaled distance (never positive)")
    missing: dict[str, float] = Field(default_factory=dict, description="per signal, added when it did not find the pair")
    intercept: float = 0.0
    threshold: float | None = Field(None, description="the fused score that kept `precision` on the calibration pairs (None: never kept)")
    precision: float = 0.99
    fitted_on: str = ""

    def features(self, evidence: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Per pair, each signal's scaled distance (0 where it did not find the pair), then
        whether it did not find it: n x 2S."""
        names = list(self.scales)
        out = np.zeros((len(evidence), 2 * len(names)))
        for j, name in enumerate(names):
            found = np.array([_within(e, name, self.radius) for e in evidence], dtype=bool)
            out[found, j] = [feature(name, e[name]) / self.scales[name] for e in evidence if _within(e, name, self.radius)]
            out[~found, len(names) + j] = 1.0
        return out

    def scores(self, evidence: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Each pair's fused probability of being a copy."""
        names = list(self.scales)
        coef = np.array([self.weights.get(n, 0.0) for n in names] + [self.missing.get(n, 0.0) for n in names])
        return 1 / (1 + np.exp(-(self.features(evidence) @ coef + self.intercept)))

    def decide(self, evidence: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Whether each pair is a match: fused score at or above the threshold."""
        return self.scores(evidence) >= self.threshold if self.threshold is not None else np.zeros(len(evidence), dtype=bool)

    def gathered(self, found: Mapping[str, Sequence[tuple[str, float]]]) -> dict[str, dict[str, float]]:
        """One query's evidence per entry, from each signal's (entry id, distance) hits (the
        searchers' and the verifier's, `keypoints` at `inlier_distance`): each signal's nearest
        distance to the entry, where it lies within that signal's radius. Score it with `scores`."""
        evidence: dict[str, dict[str, float]] = {}
        for name, hits in found.items():
            for entry_id, distance in hits:
                if name in self.scales and _within({name: distance}, name, self.radius):
                    mine = evidence.setdefault(entry_id, {})
                    mine[name] = min(distance, mine.get(name, distance))
        return evidence

    @classmethod
    def fit(cls, evidence: Sequence[Mapping[str, float]], correct: Sequence[bool], radius: Mapping[str, float] | None = None,
            precision: float = 0.99, fitted_on: str = "") -> "Fusion":
        """The logistic regression over the pairs' evidence, and the threshold that keeps
        `precision` on them (the longest prefix of the fused ranking that does)."""
        correct = np.asarray(correct, dtype=bool)
        names = sorted({n for e in evidence for n in e})
        from .signals.keypoints import inlier_distance

        radius = {n: float(r) for n, r in {"keypoints": inlier_distance(EVIDENCE_INLIERS), **(radius or {})}.items() if n in names}
        scales = {n: max([feature(n, e[n]) for e in evidence if _within(e, n, radius)] + [0.0]) or 1.0 for n in names}
        fusion = cls(radius=radius, scales=scales, precision=precision, fitted_on=fitted_on)
        coef, fusion.intercept = _logistic(fusion.features(evidence), correct, len(names))
        fusion.weights = {n: round(float(w), 6) for n, w in zip(names, coef[: len(names)])}
        fusion.missing = {n: round(float(w), 6) for n, w in zip(names, coef[len(names) :])}
        scores = fusion.scores(evidence)
        order = np.argsort(-scores, kind="stable")
        hits = np.cumsum(correct[order])
        kept = np.flatnonzero((hits / np.arange(1, len(order) + 1) >= precision) & correct[order])
        fusion.threshold = math.floor(float(scores[order][kept[-1]]) * 1e6) / 1e6 if len(kept) else None  # rounded down: it keeps that pair
        return fusion


class FusedType:
    """The photo decision as the match route shows it, a signal type of its own: `fused`, at
    distance 1 - the fused probability (`score` is the probability), matching within
    1 - the fusion's threshold unless a bank or the settings name another `fused` threshold."""

    name = FUSED
    unit = "1 - fused probability"
    content_types = ("photo",)
    index_kind = "fusion"

    def __init__(self, fusion: Fusion):
        self.fusion = fusion

    @property
    def default_threshold(self) -> float:
        return round(1.0 - self.fusion.threshold, 6) if self.fusion.threshold is not None else 0.0

    def score(self, distance: float) -> float:
        return round(1.0 - distance, 6)


def _within(evidence: Mapping[str, float], name: str, radius: Mapping[str, float]) -> bool:
    return name in evidence and evidence[name] <= radius.get(name, math.inf)


def _logistic(x: np.ndarray, y: np.ndarray, signals: int, l2: float = L2) -> tuple[np.ndarray, float]:
    """Weights and intercept of an L2-regularised logistic regression of y on x, the first
    `signals` weights (on distances) bounded above by 0 so the fusion stays monotone: a signal
    finding a pair closer never lowers its score."""
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    sign, penalty = np.where(y, 1.0, -1.0), l2 * len(y)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:  # summed, not averaged: the optimiser's tolerances are absolute
        w, b = theta[:-1], theta[-1]
        z = sign * (x @ w + b)
        g = -sign * expit(-z)
        return float(-log_expit(z).sum() + penalty * w @ w), np.append(x.T @ g + 2 * penalty * w, g.sum())

    bounds = [(None, 0.0)] * signals + [(None, None)] * (x.shape[1] - signals) + [(None, None)]
    theta = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds).x if len(y) else np.zeros(x.shape[1] + 1)
    return theta[:-1], round(float(theta[-1]), 6)
