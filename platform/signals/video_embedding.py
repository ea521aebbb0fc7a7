"""`video_embedding`: the image descriptor over a video's sampled frames, matched with a
temporal-consistency check, so a clip cut out of a banked video (or a banked clip inside a
longer upload) matches it.

In the index every sampled frame is a row (its descriptor, and its time). A query's frames are
searched within the image model's frame threshold; `aggregate` then asks, per banked video, how
many of the query's frames agree on one time offset (query time + offset = banked time, in
bins of BIN_SECONDS): the distance is 1 - that share of the shorter video's frames. Frames
matched at scattered offsets (a shared logo, a black frame) do not add up.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidInput, UnsupportedMedia
from ..settings import LimitSettings
from .base import BagSignal, RowHits, Signal
from .image_embedding import ImageEmbedding
from .video import decode_frames

BIN_SECONDS = 1.0  # offset bins; the neighbouring bin counts too (sampling jitter)
MAX_FRAMES = 20_000
_VALUE = re.compile(r"ve1:(\d+):([A-Za-z0-9+/]*={0,2}):([A-Za-z0-9+/]*={0,2})")


class VideoEmbedding(BagSignal):
    """Value: 've1:<n>:<base64 float16 n x 256 descriptors>:<base64 float32 n frame times>'."""

    name = "video_embedding"
    content_types = frozenset({"video"})
    index_kind = "float"
    dim = 256
    needs_model = True
    default_threshold = 0.5
    unit = "1 - share of frames aligned in time"

    def __init__(self, image: ImageEmbedding):
        self.image = image  # the photo descriptor, configured and loaded with it

    @property
    def row_radius(self) -> float:
        """The image model's frame threshold (looser than a photo's: the time alignment of many
        frames makes up the precision), or its photo threshold for a model without one."""
        frame = self.image.config.frame_threshold
        return self.image.default_threshold if frame is None else frame

    def warm_up(self) -> None:
        self.image.warm_up()

    def compute(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        if not isinstance(content, bytes):
            raise UnsupportedMedia("video_embedding needs video bytes, not text")
        frames = list(decode_frames(content, limits.video_fps, limits.max_video_seconds, limits.max_image_pixels))
        vectors = self.image.descriptor.embed([image for _, _, image in frames])
        return Signal(self.serialize(vectors, np.array([t for _, t, _ in frames], dtype=np.float32)))

    @staticmethod
    def serialize(vectors: np.ndarray, times: np.ndarray) -> str:
        pack = lambda a: base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")  # noqa: E731
        return f"ve1:{len(times)}:{pack(vectors.astype('<f2'))}:{pack(times.astype('<f4'))}"

    def frames(self, value: str) -> tuple[np.ndarray, np.ndarray]:
        """(n x 256 float32 descriptors, n times) of a canonical value."""
        match = _VALUE.fullmatch(value)
        n = int(match[1])
        vectors = np.frombuffer(base64.b64decode(match[2]), dtype="<f2").astype(np.float32).reshape(n, self.dim)
        return vectors, np.frombuffer(base64.b64decode(match[3]), dtype="<f4").astype(np.float32)

    def parse(self, value: Any) -> str:
        match = _VALUE.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise InvalidInput(f"{self.name} must be 've1:<n>:<base64 float16 n x {self.dim}>:<base64 float32 n times>'")
        n = int(match[1])
        if not 0 < n <= MAX_FRAMES:
            raise InvalidInput(f"{self.name} must hold 1 to {MAX_FRAMES} frames, not {n}")
        vectors, times = (base64.b64decode(match[2]), base64.b64decode(match[3]))
        if len(vectors) != n * self.dim * 2 or len(times) != n * 4:
            raise InvalidInput(f"{self.name} says {n} frames but holds {len(vectors) // (2 * self.dim)} descriptors and {len(times) // 4} times")
        decoded_vectors, decoded_times = self.frames(value)
        if not (np.isfinite(decoded_vectors).all() and np.isfinite(decoded_times).all()) or np.any(np.diff(decoded_times) <= 0):
            raise InvalidInput(f"{self.name} needs finite descriptors and strictly increasing frame times")
        return value

    def rows(self, values: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        decoded = [self.frames(v) for v in values]
        if not decoded:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)
        vectors = np.concatenate([v for v, _ in decoded])
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        owner = np.concatenate([np.full(len(t), i, np.int64) for i, (_, t) in enumerate(decoded)])
        return vectors, owner, np.concatenate([t for _, t in decoded])

    def aggregate(self, query_times: np.ndarray, hits: RowHits, banked_rows: dict[str, int]) -> dict[str, float]:
        entries, which = hits.by_entry()
        bins = np.floor((hits.banked_time - query_times[hits.query_row]) / BIN_SECONDS).astype(np.int64)
        out = {}
        for e, entry in enumerate(entries.tolist()):
            mine = which == e
            best = 0
            for b in np.unique(bins[mine]).tolist():  # few offsets per entry: frames agree or scatter
                aligned = mine & (np.abs(bins - b - 0.5) <= 1)  # this bin and the next
                best = max(best, len(np.unique(hits.query_row[aligned])))
            shorter = max(1, min(len(query_times), banked_rows.get(entry, len(query_times))))
            out[entry] = 1.0 - min(1.0, best / shorter)
        return out

    def distance(self, a: str, b: str) -> float:
        (rows_a, _, ta), (rows_b, _, tb) = self.rows([a]), self.rows([b])
        close = np.argwhere(1.0 - rows_a @ rows_b.T <= self.row_radius)
        hits = RowHits(close[:, 0], np.full(len(close), "b", dtype=object), np.zeros(len(close)), close[:, 1], tb[close[:, 1]])
        return self.aggregate(ta, hits, {"b": len(tb)}).get("b", 1.0)
