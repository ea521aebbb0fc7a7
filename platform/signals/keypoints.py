"""`keypoints`: a banked photo's local features, kept with the entry for geometric verification
(`platform/verify.py`), never searched.

Why a signal type: keypoints are computed like every other photo signal (at banking by the
hasher, from stored media by the reindex job's Ray Data stage), stored in the entry's signals
and checked by `parse` when a partner banks them raw; their index kind is `stored`, so the
reindex job publishes them as a versioned table of entry id -> value (no faiss) that the
`Verifier` deployment loads and follows like a searcher follows its index (new entries from
the catalog within seconds, disabled and deleted ones dropped), and nothing re-decodes banked
media per query.

A distance between two values is how little of a full fit the query's keypoints make onto the
banked ones: 1 - inliers / FULL_FIT (0 from FULL_FIT inliers on), so that lower is closer and
the threshold is an inlier count like any other signal's distance threshold.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import verify
from ..media import open_image
from ..settings import LimitSettings
from .base import Signal, SignalType

FULL_FIT = 100  # inliers: a fit this good is certainly a copy (distance 0)
THRESHOLD_INLIERS = 25  # at precision 0.99 on held-out material (benchmarks/bench_verify.py)


def inlier_distance(inliers: int) -> float:
    return round(1.0 - min(inliers, FULL_FIT) / FULL_FIT, 6)


def inliers_of(distance: float) -> int:
    return int(round((1.0 - distance) * FULL_FIT))


class Keypoints(SignalType):
    """Value: `verify.serialize`'s 'kp1:<n>:<width>:<height>:<positions>:<descriptors>'."""

    name = "keypoints"
    content_types = frozenset({"photo"})
    index_kind = "stored"
    default_threshold = inlier_distance(THRESHOLD_INLIERS)
    unit = f"1 - RANSAC inliers / {FULL_FIT}"

    def compute(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        image = open_image(content if isinstance(content, bytes) else content.encode(), limits.max_image_pixels)
        features = verify.extract(image)
        if len(features) < verify.MIN_MATCHES:
            return Signal(None, reason=f"{len(features)} keypoints: too little detail to verify a copy against")
        return Signal(verify.serialize(features))

    def parse(self, value: Any) -> str:
        verify.parse(value)
        return value

    def encode(self, values: Sequence[str]) -> np.ndarray:
        return np.asarray(list(values), dtype=object)

    def distance(self, a: str, b: str) -> float:
        """a: the query's keypoints, b: the banked ones (mirror images are the verifier's: it has the query image)."""
        return inlier_distance(verify.fit(verify.parse(a), verify.parse(b))[0])

    def score(self, distance: float) -> float:
        return min(1.0, max(0.0, 1.0 - distance))
