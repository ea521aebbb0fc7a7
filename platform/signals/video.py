"""vPDQ: Meta's video PDQ. A video is the bag of the PDQ hashes of its sampled frames; two videos
match by the share of each one's frames that have a near frame (Hamming <= 31) in the other.

Reference: ThreatExchange `vpdq` (C++ hasher, python-threatexchange brute matcher). What this
module reproduces, checked against the conformance files in shared/conformance/vpdq:
- frames are counted in decoder output order from 0; frame n is hashed when n % frame_mod == 0,
  frame_mod = int(video_fps / fps) (at least 1); its timestamp is n / video_fps (avg frame rate,
  else the stream's base rate), rounded to 3 decimals;
- each sampled frame is hashed at full resolution as RGB24 by the PDQ reference (`pdqhash`);
  scaling to 512x512 first, as the photo path does, agrees less with the reference on frames;
- matching: exact duplicate hashes dropped ("unique frames"), frames of quality < 50 ignored,
  a frame matches when within Hamming 31 of any frame on the other side; a video matches when
  >= 80% of the banked video's frames match and >= 0% (a parameter) of the query's.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Sequence

import av
import numpy as np
import pdqhash

from ..errors import InvalidInput, TooLarge, UnsupportedMedia
from ..settings import LimitSettings
from .base import BagSignal, RowHits, Signal

# Frames hashed per second when no limit says otherwise: 30 hashes every frame of the usual videos, as
# the reference's sample hashes do. The service samples `limits.video_fps` (1/s by default, as the
# reference Python hasher); denser sampling finds more cuts that start at different times:
# chair-19 vs its siblings scores 4-16% at 1/s, 85-100% at 30/s.
DEFAULT_FPS = 30.0
MAX_DECODED_FPS = 240  # frames decoded per second of the limit before the video counts as too long
FRAME_DISTANCE = 31  # Hamming bits: two frames match
FRAME_MIN_QUALITY = 50  # frames below this PDQ quality take no part in matching
BANKED_MATCH_PERCENT = 80.0  # share of the banked video's frames that must match
QUERY_MATCH_PERCENT = 0.0  # share of the query's frames that must match (0: extra content is fine)
MAX_FRAMES_IN_VALUE = 100_000


@dataclass(frozen=True)
class VideoFrameHash:
    """One hashed frame. `frame_number` is None for frames parsed from a stored or client value."""

    pdq_hex: str
    quality: int
    timestamp: float
    frame_number: int | None = None

    def token(self) -> str:
        return f"{self.pdq_hex}:{self.quality}:{self.timestamp:.3f}"


# ---------------------------------------------------------------- decoding and hashing


def decode_frames(
    data: bytes,
    fps: float = DEFAULT_FPS,
    max_seconds: float = LimitSettings().max_video_seconds,
    max_pixels: int | None = None,
    frame_size: int | None = None,
) -> Iterator[tuple[int, float, Any]]:
    """(frame_number, timestamp_seconds, PIL RGB image) of the frames sampled at `fps` per second,
    at full resolution, or scaled to frame_size x frame_size (Lanczos, as the reference's downsampling).

    TooLarge when the video is longer than `max_seconds` (from the container's duration up front,
    and from the frames while decoding) or its frames have more than `max_pixels` pixels;
    UnsupportedMedia when the bytes are no decodable video."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except av.FFmpegError as exc:
        raise UnsupportedMedia(f"not a decodable video: {_ffmpeg_reason(exc)}") from None
    with container:
        fmt = container.format.name
        if fmt.endswith("_pipe") or fmt == "image2":
            raise UnsupportedMedia(f"not a video: a still image ({fmt.removesuffix('_pipe')})")
        if not container.streams.video:
            raise UnsupportedMedia(f"no video stream in the {fmt} file")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        if not rate or rate <= 0:
            raise UnsupportedMedia("video has no frame rate")
        rate = float(rate)
        width, height = stream.codec_context.width, stream.codec_context.height
        if max_pixels is not None and width * height > max_pixels:
            raise TooLarge(f"video frames have {width}x{height} pixels, over the limit of {max_pixels}")
        duration = _duration_seconds(container, stream)
        if duration is not None and duration > max_seconds:
            raise TooLarge(f"video lasts {duration:.1f} s, over the limit of {max_seconds:g} s")
        frame_mod = max(1, int(rate / fps + 1e-9))
        max_frames = math.ceil(max_seconds * max(rate, 1.0)) + 1
        decoded_cap = math.ceil(max_seconds * MAX_DECODED_FPS) + 1
        stream.thread_type = "AUTO"
        frame_number, first_time = -1, None
        try:
            for frame in container.decode(stream):
                frame_number += 1
                seconds = frame_number / rate
                if first_time is None:
                    first_time = frame.time
                pts_seconds = frame.time - first_time if frame.time is not None and first_time is not None else 0.0
                if frame_number >= min(max_frames, decoded_cap) or max(seconds, pts_seconds) > max_seconds:
                    raise TooLarge(f"video lasts more than {max_seconds:g} s, the limit")
                if frame_number % frame_mod:
                    continue
                if max_pixels is not None and frame.width * frame.height > max_pixels:
                    raise TooLarge(f"video frames have {frame.width}x{frame.height} pixels, over the limit of {max_pixels}")
                if frame_size:
                    frame = frame.reformat(width=frame_size, height=frame_size, format="rgb24", interpolation="LANCZOS")
                yield frame_number, round(seconds, 3), frame.to_image()
        except av.FFmpegError as exc:
            raise UnsupportedMedia(f"video could not be decoded at frame {frame_number + 1}: {_ffmpeg_reason(exc)}") from None
        if frame_number < 0:
            raise UnsupportedMedia(f"no decodable frame in the {fmt} video")


def pdq_of_frame(image: Any) -> tuple[str, int]:
    """PDQ hex and quality of one frame as given (the vPDQ reference hashes frames at full resolution)."""
    bits, quality = pdqhash.compute(np.ascontiguousarray(np.asarray(image, dtype=np.uint8)))
    return np.packbits(bits.astype(np.uint8)).tobytes().hex(), int(quality)


def vpdq_hash(
    data: bytes,
    fps: float = DEFAULT_FPS,
    max_seconds: float = LimitSettings().max_video_seconds,
    max_pixels: int | None = None,
    frame_size: int | None = None,
) -> list[VideoFrameHash]:
    """Every sampled frame's hash, in frame order (low-quality and repeated frames included)."""
    rows = []
    for number, seconds, image in decode_frames(data, fps, max_seconds, max_pixels, frame_size):
        pdq_hex, quality = pdq_of_frame(image)
        rows.append(VideoFrameHash(pdq_hex, quality, seconds, number))
    return rows


def _duration_seconds(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _ffmpeg_reason(exc: av.FFmpegError) -> str:
    return (getattr(exc, "strerror", None) or str(exc)).strip().rstrip(".")


# ---------------------------------------------------------------- matching


def dedupe(frames: Sequence[VideoFrameHash], distance: int = 0) -> list[VideoFrameHash]:
    """The unique frames, first occurrence kept. distance 0 (the reference): drop exact repeats;
    distance d > 0: drop every frame within d bits of a frame already kept."""
    if distance <= 0:
        seen: set[str] = set()
        kept = []
        for frame in frames:
            if frame.pdq_hex not in seen:
                seen.add(frame.pdq_hex)
                kept.append(frame)
        return kept
    kept, kept_bits = [], np.empty((0, 4), dtype=np.uint64)
    for frame in frames:
        bits = _words([frame])
        if not len(kept) or np.bitwise_count(kept_bits ^ bits).sum(axis=1).min() > distance:
            kept.append(frame)
            kept_bits = np.vstack([kept_bits, bits])
    return kept


def match(
    query_frames: Sequence[VideoFrameHash],
    banked_frames: Sequence[VideoFrameHash],
    distance: int = FRAME_DISTANCE,
    quality: int = FRAME_MIN_QUALITY,
) -> tuple[float, float]:
    """(query_match_percent, banked_match_percent): the share of each side's unique frames of
    quality >= `quality` that lie within `distance` bits of some such frame on the other side.
    A side with no such frame scores 0."""
    query = [f for f in dedupe(query_frames) if f.quality >= quality]
    banked = [f for f in dedupe(banked_frames) if f.quality >= quality]
    if not query or not banked:
        return 0.0, 0.0
    near = _near_matrix(_words(query), _words(banked), distance)
    return 100.0 * near.any(axis=1).mean(), 100.0 * near.any(axis=0).mean()


def is_match(
    query_percent: float,
    banked_percent: float,
    banked_threshold: float = BANKED_MATCH_PERCENT,
    query_threshold: float = QUERY_MATCH_PERCENT,
) -> bool:
    return banked_percent >= banked_threshold and query_percent >= query_threshold


def _words(frames: Sequence[VideoFrameHash]) -> np.ndarray:
    return np.frombuffer(b"".join(bytes.fromhex(f.pdq_hex) for f in frames), dtype=">u8").astype(np.uint64).reshape(-1, 4)


def _near_matrix(a: np.ndarray, b: np.ndarray, distance: int, chunk: int = 1024) -> np.ndarray:
    """Boolean (len(a), len(b)): Hamming(a[i], b[j]) <= distance; chunked to bound memory."""
    out = np.empty((len(a), len(b)), dtype=bool)
    for start in range(0, len(a), chunk):
        block = a[start : start + chunk, None, :] ^ b[None, :, :]
        out[start : start + chunk] = np.bitwise_count(block).sum(axis=2, dtype=np.int32) <= distance
    return out


# ---------------------------------------------------------------- the signal type

_TOKEN = re.compile(r"([0-9a-fA-F]{64}):(\d{1,3}):(\d{1,9}(?:\.\d{1,3})?)")


class VPDQ(BagSignal):
    """vPDQ of a video. Value: its unique frames (exact repeats dropped, low-quality frames kept
    so the stored value is the reference's), as comma-separated `pdqhex:quality:seconds` tokens in
    frame order, e.g. "e271...055c:100:0.000,c0f1...055c:98:1.000".

    `distance(query, banked)` is in percent of the banked video's (matchable) frames left
    unmatched: 100 - banked_match_percent, or 100 when the query's match share is under
    `query_match_percent`; the reference's match rule (banked >= 80%) is distance <= 20
    (`max_distance`).

    In the index a video is one row per matchable frame (`rows`: 256-bit packed, 32 uint8 each);
    a query's frames are searched within `row_radius` (31) Hamming bits and `aggregate` turns
    the hits into this distance per banked video.
    """

    name = "vpdq"
    content_types = frozenset({"video"})
    index_kind = "binary"
    dim = 256
    default_threshold = 100.0 - BANKED_MATCH_PERCENT
    row_radius = FRAME_DISTANCE
    unit = "percent of banked frames unmatched"
    query_match_percent: ClassVar[float] = QUERY_MATCH_PERCENT

    def __init__(self, frame_size: int | None = None):
        self.frame_size = frame_size  # None: full resolution (the reference); 128: 2.5x faster, same matches here

    def compute(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        if not isinstance(content, bytes):
            raise UnsupportedMedia("vpdq needs video bytes, not text")
        if len(content) > limits.max_upload_bytes:
            raise TooLarge(f"video has {len(content)} bytes, over the limit of {limits.max_upload_bytes}")
        frames = dedupe(vpdq_hash(content, limits.video_fps, limits.max_video_seconds, limits.max_image_pixels, self.frame_size))
        usable = sum(f.quality >= FRAME_MIN_QUALITY for f in frames)
        quality = round(100.0 * usable / len(frames), 1)  # share of unique frames good enough to match
        if not usable:
            return Signal(None, quality, f"no video frame has pdq quality >= {FRAME_MIN_QUALITY}: too little detail to hash")
        return Signal(self.serialize(frames), quality)

    @staticmethod
    def serialize(frames: Sequence[VideoFrameHash]) -> str:
        return ",".join(f.token() for f in frames)

    @staticmethod
    def frames(value: str) -> list[VideoFrameHash]:
        """The frames of a canonical value (one this module wrote or `parse` accepted)."""
        out = []
        for token in value.split(","):
            pdq_hex, quality, seconds = token.split(":")
            out.append(VideoFrameHash(pdq_hex, int(quality), float(seconds)))
        return out

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise InvalidInput("vpdq must be a non-empty string of comma-separated pdqhex:quality:seconds frames")
        tokens = value.split(",")
        if len(tokens) > MAX_FRAMES_IN_VALUE:
            raise InvalidInput(f"vpdq has {len(tokens)} frames, over the limit of {MAX_FRAMES_IN_VALUE}")
        frames: list[VideoFrameHash] = []
        for i, token in enumerate(tokens):
            m = _TOKEN.fullmatch(token.strip())
            if not m:
                raise InvalidInput(
                    f"vpdq frame {i} is {token[:90]!r}; each frame must be <64 hex>:<quality 0-100>:<seconds, up to 3 decimals>"
                )
            quality, seconds = int(m[2]), float(m[3])
            if quality > 100:
                raise InvalidInput(f"vpdq frame {i} has quality {quality}, over 100")
            if frames and seconds <= frames[-1].timestamp:
                raise InvalidInput(f"vpdq frame {i} is at {seconds:.3f} s, not after frame {i - 1} at {frames[-1].timestamp:.3f} s")
            frames.append(VideoFrameHash(m[1].lower(), quality, seconds))
        return self.serialize(dedupe(frames))

    def rows(self, values: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Packed uint8 rows (n x 32) of the matchable frames (quality >= 50) of the values, in
        order, the value each came from, and each frame's time."""
        hexes, owner, times = [], [], []
        for i, value in enumerate(values):
            for frame in self.frames(value):
                if frame.quality >= FRAME_MIN_QUALITY:
                    hexes.append(frame.pdq_hex)
                    owner.append(i)
                    times.append(frame.timestamp)
        rows = np.frombuffer(b"".join(bytes.fromhex(h) for h in hexes), dtype=np.uint8).reshape(len(hexes), 32)
        return rows, np.asarray(owner, dtype=np.int64), np.asarray(times, dtype=np.float32)

    def aggregate(self, query_times: np.ndarray, hits: RowHits, banked_rows: dict[str, int]) -> dict[str, float]:
        """The reference's rule from frame hits: the share of each banked video's frames with a
        near query frame, and of the query's frames with a near frame in it."""
        entries, which = hits.by_entry()
        query_frames = np.bincount(np.unique(np.stack([which, hits.query_row]), axis=1)[0], minlength=len(entries))
        banked_frames = np.bincount(np.unique(np.stack([which, hits.banked_row]), axis=1)[0], minlength=len(entries))
        out = {}
        for entry, q, b in zip(entries.tolist(), query_frames.tolist(), banked_frames.tolist()):
            query_percent = 100.0 * q / max(1, len(query_times))
            out[entry] = 100.0 if query_percent < self.query_match_percent else 100.0 - 100.0 * b / max(1, banked_rows[entry])
        return out

    def match_percents(self, query: str, banked: str) -> tuple[float, float]:
        return match(self.frames(query), self.frames(banked))

    def distance(self, a: str, b: str) -> float:
        """a: the query's value, b: the banked one's."""
        query_percent, banked_percent = self.match_percents(a, b)
        if query_percent < self.query_match_percent:
            return 100.0
        return 100.0 - banked_percent

    def score(self, distance: float) -> float:
        return min(1.0, max(0.0, 1.0 - distance / 100.0))
