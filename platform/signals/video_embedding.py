"""`video_embedding`: the image descriptor over a video's sampled frames, matched with a
temporal-consistency check, so a clip cut out of a banked video (or a banked clip inside a
longer upload) matches it.

What a frame gives (`frame_views`): the descriptor of the frame in grayscale, and of four
overlapping corner regions of it (each 2/3 of the width and height), REGIONS rows in all.
Grayscale because a video copy is often re-graded, tinted or turned grey or sepia, and its
identity lies in the luminance (as PDQ's does); regions because a logo, caption or sticker
laid over part of every frame leaves a corner untouched, and that corner still matches. A
region too flat to identify anything (luminance deviation under MIN_DETAIL: a black frame, a
blank wall) gets a zero vector, which is no nearer than 1.0 to anything: it never matches.

In the index every view is a row (its vector, and its frame's time). A query's rows are
searched within the frame threshold (any region of a query frame may meet any region of a
banked frame: a crop of the frame is one of its regions); `aggregate` then asks, per banked
video, how many of its frames are met by query frames that agree on one time offset (query
time + offset = banked time, in bins of BIN_SECONDS): the distance is 1 - that share of the
shorter video. Frames met at scattered offsets (a shared logo, a stock shot) do not add up.

A query is sampled QUERY_OVERSAMPLING times as densely as a banked video (`compute_query`), so
every banked frame has a query frame within a sixth of a second of it, wherever the copy was
cut: at equal rates a cut that falls between two banked samples shifts every frame by up to
half a second, which in a moving shot is a different picture.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..errors import InvalidInput, UnsupportedMedia
from ..settings import LimitSettings
from .base import BagSignal, RowHits, Signal
from .image_embedding import ImageEmbedding
from .video import decode_frames

BIN_SECONDS = 1.0  # offset bins; the neighbouring bin counts too (sampling jitter)
MAX_FRAMES = 20_000
REGIONS = 5  # rows per frame: the whole frame, then its four overlapping corners
MIN_DETAIL = 0.02  # luminance standard deviation (0-1) below which a region identifies nothing
QUERY_OVERSAMPLING = 3  # a query's frames per banked frame
# 've2' is the current form; 've1' (an earlier version's: whole colour frames only) still reads from a store
_VALUE = re.compile(r"ve(?P<version>[12]):(?P<n>\d+):(?P<vectors>[A-Za-z0-9+/]*={0,2}):(?P<times>[A-Za-z0-9+/]*={0,2})")


def frame_views(image: Image.Image) -> list[Image.Image]:
    """The REGIONS grayscale views of a frame that become its rows: whole, then the corners."""
    gray = image.convert("L")
    w, h = gray.size
    corners = [(x, y, x + 2 * w // 3, y + 2 * h // 3) for x in (0, w // 3) for y in (0, h // 3)]
    return [gray.convert("RGB"), *(gray.crop(box).convert("RGB") for box in corners)]


def detailed(view: Image.Image) -> bool:
    return float(np.asarray(view.convert("L"), dtype=np.float32).std()) / 255.0 >= MIN_DETAIL


class VideoEmbedding(BagSignal):
    """Value: 've2:<n>:<base64 float16 (n x REGIONS) x 256 descriptors>:<base64 float32 n frame times>'."""

    name = "video_embedding"
    content_types = frozenset({"video"})
    index_kind = "float"
    dim = 256
    needs_model = True
    query_form = True
    default_threshold = 0.5
    unit = "1 - share of frames aligned in time"

    def __init__(self, image: ImageEmbedding):
        self.image = image  # the photo descriptor, configured and loaded with it
        self.fps = LimitSettings().video_fps  # banked frames per second: how a query's span counts

    def configure(self, settings) -> None:
        self.fps = settings.limits.video_fps

    @property
    def row_radius(self) -> float:
        """The image model's frame threshold (looser than a photo's: the time alignment of many
        frames makes up the precision), or its photo threshold for a model without one."""
        frame = self.image.config.frame_threshold
        return self.image.default_threshold if frame is None else frame

    def warm_up(self) -> None:
        self.image.warm_up()

    def compute(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        return self._compute(content, limits, limits.video_fps)

    def compute_query(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        """The query form: frames sampled QUERY_OVERSAMPLING times as densely."""
        return self._compute(content, limits, limits.video_fps * QUERY_OVERSAMPLING)

    def _compute(self, content: bytes | str, limits: LimitSettings, fps: float) -> Signal:
        if not isinstance(content, bytes):
            raise UnsupportedMedia("video_embedding needs video bytes, not text")
        frames = list(decode_frames(content, fps, limits.max_video_seconds, limits.max_image_pixels))
        views = [view for _, _, image in frames for view in frame_views(image)]
        vectors = self.image.descriptor.embed(views)
        vectors[np.array([not detailed(view) for view in views], dtype=bool)] = 0.0
        return Signal(self.serialize(vectors, np.array([t for _, t, _ in frames], dtype=np.float32)))

    @staticmethod
    def serialize(vectors: np.ndarray, times: np.ndarray) -> str:
        pack = lambda a: base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")  # noqa: E731
        return f"ve2:{len(times)}:{pack(vectors.astype('<f2'))}:{pack(times.astype('<f4'))}"

    def frames(self, value: str) -> tuple[np.ndarray, np.ndarray]:
        """(n x REGIONS x 256 float32 descriptors, n times) of a canonical value. A 've1' value
        stored by an earlier version (a colour vector per frame, no regions) still reads, its
        regions empty, so a store banked then keeps serving until a reindex recomputes it."""
        match = _VALUE.fullmatch(value)
        n = int(match["n"])
        vectors = np.frombuffer(base64.b64decode(match["vectors"]), dtype="<f2").astype(np.float32).reshape(n, -1, self.dim)
        vectors = np.pad(vectors, ((0, 0), (0, REGIONS - vectors.shape[1]), (0, 0)))  # a 've1' value's regions: zero
        return vectors, np.frombuffer(base64.b64decode(match["times"]), dtype="<f4").astype(np.float32)

    def parse(self, value: Any) -> str:
        match = _VALUE.fullmatch(value) if isinstance(value, str) else None
        if match is None or match["version"] != "2":
            raise InvalidInput(f"{self.name} must be 've2:<n>:<base64 float16 n x {REGIONS} x {self.dim}>:<base64 float32 n times>'")
        n = int(match["n"])
        if not 0 < n <= MAX_FRAMES:
            raise InvalidInput(f"{self.name} must hold 1 to {MAX_FRAMES} frames, not {n}")
        vectors, times = (base64.b64decode(match["vectors"]), base64.b64decode(match["times"]))
        if len(vectors) != n * REGIONS * self.dim * 2 or len(times) != n * 4:
            raise InvalidInput(f"{self.name} says {n} frames but holds {len(vectors) // (2 * REGIONS * self.dim)} frames' "
                               f"descriptors ({REGIONS} each) and {len(times) // 4} times")
        decoded_vectors, decoded_times = self.frames(value)
        if not (np.isfinite(decoded_vectors).all() and np.isfinite(decoded_times).all()) or np.any(np.diff(decoded_times) <= 0):
            raise InvalidInput(f"{self.name} needs finite descriptors and strictly increasing frame times")
        return value

    def rows(self, values: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        decoded = [self.frames(v) for v in values]
        if not decoded:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)
        vectors = np.concatenate([v.reshape(-1, self.dim) for v, _ in decoded])
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)  # flat regions stay zero
        owner = np.concatenate([np.full(len(t) * REGIONS, i, np.int64) for i, (_, t) in enumerate(decoded)])
        return vectors, owner, np.concatenate([np.repeat(t, REGIONS) for _, t in decoded])

    def aggregate(self, query_times: np.ndarray, hits: RowHits, banked_rows: dict[str, int]) -> dict[str, float]:
        """Per banked video: its frames met by query frames at one time offset (this bin or the
        next), over the shorter video's frames (the query's span counted at the banked rate)."""
        entries, which = hits.by_entry()
        bins = np.floor((hits.banked_time - query_times[hits.query_row]) / BIN_SECONDS).astype(np.int64)
        query_frames = 1 + int(round(float(np.ptp(query_times)) * self.fps)) if len(query_times) else 1
        out = {}
        for e, entry in enumerate(entries.tolist()):
            mine = which == e
            best = 0
            for b in np.unique(bins[mine]).tolist():  # few offsets per entry: frames agree or scatter
                aligned = mine & (np.abs(bins - b - 0.5) <= 1)  # this bin and the next
                best = max(best, len(np.unique(hits.banked_time[aligned])))
            banked_frames = banked_rows.get(entry, REGIONS * query_frames) // REGIONS
            out[entry] = 1.0 - min(1.0, best / max(1, min(query_frames, banked_frames)))
        return out

    def score(self, distance: float) -> float:
        """The share of the shorter video's frames aligned."""
        return min(1.0, max(0.0, 1.0 - distance))

    def distance(self, a: str, b: str) -> float:
        """a: the query's value (either form), b: the banked one's."""
        (rows_a, _, ta), (rows_b, _, tb) = self.rows([a]), self.rows([b])
        close = np.argwhere(1.0 - rows_a @ rows_b.T <= self.row_radius)
        hits = RowHits(close[:, 0], np.full(len(close), "b", dtype=object), np.zeros(len(close)), close[:, 1], tb[close[:, 1]])
        return self.aggregate(ta, hits, {"b": len(tb)}).get("b", 1.0)


class FrameView(ImageEmbedding):
    """A photo as video_embedding sees a whole frame (grayscale): what a model's frame threshold
    is calibrated on (`indexing/train.py`). Its distances are image_embedding's cosine distances."""

    @staticmethod
    def view(image):
        return frame_views(image)[0]
