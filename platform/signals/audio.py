"""Audio fingerprint: spectral-peak landmark hashes (Wang 2003, "Shazam") matched by votes
that agree on one time offset.

Pipeline
--------
1. `decode_audio`: any container/codec PyAV reads -> mono float32 at 8 kHz, bounded in
   duration (TooLarge) and with a precise UnsupportedMedia when it is not audio.
2. `landmarks`: log-magnitude STFT (512-point window, hop 128 = 16 ms), local maxima of the
   spectrogram (the strongest few per second), and pairs of peaks (anchor, target in a
   fan-out zone up to ~1 s later) hashed as (f1, f2 - f1, dt) into a uint32; each hash is
   kept with its anchor frame.  Volume does not change which bins are local maxima, and
   lossy codecs keep the strongest peaks, so most hashes survive re-encoding.
3. Matching goes through the service's generic bag machinery: each landmark is an index row
   (`rows`: its hash a key of a "postings" shard, its anchor a time), a query reads only the
   postings of its own hashes (platform/index.py, `LiveIndex.search_bags`), and `aggregate`
   counts, per entry, the hits that agree on one offset `t_bank - t_query`.  `distance`
   scores two values the same way, from their equal hashes.
4. Speed changes (+-5 %, i.e. resampled: pitch and tempo change together) move every
   peak in frequency and time, so the hashes of a sped-up copy differ from the bank's.
   They are handled at query time: `compute_query` fingerprints the query audio resampled
   by a few factors (`QUERY_SPEEDS`, `speed_variants`), one of which undoes the change to
   within ~1 %, and packs all the variants into one 'af1q:' value, variant v's frames
   moved by v * VARIANT_STRIDE; `aggregate` keeps each entry's best variant.  A
   client-supplied 'af1:' value matches only at its own speed.  The evaluation
   (benchmarks/eval_audio.py) measured this against coarser, speed-tolerant hashes.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from fractions import Fraction
from typing import Any, Sequence

import av
import numpy as np

from ..errors import InvalidInput, TooLarge, UnsupportedMedia
from ..settings import LimitSettings
from .base import BagSignal, RowHits, Signal

SAMPLE_RATE = 8000
N_FFT = 512
HOP = 128  # 16 ms frames: 62.5 frames per second
FRAMES_PER_SECOND = SAMPLE_RATE / HOP
MIN_BIN, MAX_BIN = 4, 250  # ~60 Hz .. ~3.9 kHz
PEAK_FREQ_RADIUS = 12  # a peak is the maximum of +-12 bins (~190 Hz) ...
PEAK_TIME_RADIUS = 6  # ... and +-6 frames (~100 ms)
PEAKS_PER_SECOND = 20  # the strongest local maxima kept per second
PEAK_FLOOR_DB = 50.0  # ignore peaks this far below the loudest bin (silence, dither) ...
ABSOLUTE_FLOOR_DB = -60.0  # ... or below this level (a full-scale sine is ~ +42 dB): digital silence
FAN_OUT = 5  # targets per anchor
PAIR_WINDOW = 40  # candidate targets examined per anchor (peaks are time-sorted)
MIN_DT, MAX_DT = 1, 63  # target zone in frames after the anchor (6 bits)
MAX_DF = 63  # |f2 - f1| in bins (7 bits)
OFFSET_BIN = 2  # frames per vote bin; a bin and its best neighbour are summed
FREQ_QUANT = 1  # bins per hashed frequency step (coarser: more speed tolerant, less specific)
TIME_QUANT = 1  # frames per hashed dt step
QUERY_SPEEDS = (1.0, 0.975, 1.025, 0.95, 1.05)  # query resampled by these factors
DEFAULT_MIN_VOTES = 12
MIN_SECONDS = 1.0

_LANDMARK_DTYPE = np.dtype("<u4")
_VALUE_PREFIX = "af1:"
_QUERY_PREFIX = "af1q:"
VARIANT_STRIDE = 1 << 20  # frames between speed variants in a query value: far beyond any recording's length
_VALUE_RE = re.compile(r"^af1:[A-Za-z0-9+/]*={0,2}$")


# --------------------------------------------------------------------------- decoding


def decode_audio(data: bytes, sample_rate: int = SAMPLE_RATE, max_seconds: float = LimitSettings().max_audio_seconds) -> np.ndarray:
    """The first audio stream of `data` as mono float32 samples in [-1, 1] at `sample_rate`.

    TooLarge when it lasts longer than `max_seconds` (checked from the header when it says,
    and while decoding in any case); UnsupportedMedia when it is not decodable audio."""
    if not data:
        raise UnsupportedMedia("audio is empty")
    limit = int(max_seconds * sample_rate)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        raise UnsupportedMedia(f"not decodable audio: {_one_line(exc)}") from None
    try:
        if not container.streams.audio:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
            raise UnsupportedMedia(f"media has no audio stream ({container.format.name}: {kinds})")
        stream = container.streams.audio[0]
        header_seconds = _declared_seconds(container, stream)
        if header_seconds is not None and header_seconds > max_seconds + 1:
            raise TooLarge(f"audio lasts {header_seconds:.1f} s, over the limit of {max_seconds:g} s")
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=sample_rate)
        error: Exception | None = None
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray()[0]
                    chunks.append(chunk)
                    total += chunk.shape[0]
                if total > limit:
                    raise TooLarge(f"audio lasts more than {max_seconds:g} s, over the limit of {max_seconds:g} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray()[0])
        except (av.FFmpegError, ValueError) as exc:  # corrupt or truncated stream
            error = exc
        if error is not None and total < sample_rate * MIN_SECONDS:
            raise UnsupportedMedia(f"audio could not be decoded: {_one_line(error)}")
    finally:
        container.close()
    if not chunks:
        raise UnsupportedMedia("audio stream holds no samples")
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    if samples.shape[0] > limit:
        raise TooLarge(f"audio lasts {samples.shape[0] / sample_rate:.1f} s, over the limit of {max_seconds:g} s")
    return samples


def _declared_seconds(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


# --------------------------------------------------------------------------- landmarks


def _resample(samples: np.ndarray, factor: float) -> np.ndarray:
    """`samples` stretched to `factor` times their length (pitch and tempo x 1/factor)."""
    if factor == 1.0:
        return samples
    return _resample_by(samples, Fraction(factor).limit_denominator(80))


def _resample_by(samples: np.ndarray, ratio: Fraction) -> np.ndarray:
    from scipy.signal import resample_poly  # here: 76 MiB that only the processes hashing audio need

    return resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32, copy=False)


def spectrogram(samples: np.ndarray) -> np.ndarray:
    """Log-magnitude STFT in dB, shape (frames, N_FFT // 2 + 1)."""
    x = np.asarray(samples, dtype=np.float32)
    if x.shape[0] < N_FFT:
        return np.zeros((0, N_FFT // 2 + 1), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(N_FFT).astype(np.float32), axis=1))
    return (20.0 * np.log10(spectrum + 1e-7)).astype(np.float32)


def peaks(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frame, bin) of the spectral peaks, sorted by frame then bin."""
    spec = spectrogram(samples)
    if spec.shape[0] == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    from scipy.ndimage import maximum_filter

    spec = spec[:, MIN_BIN:MAX_BIN]
    local_max = maximum_filter(spec, size=(2 * PEAK_TIME_RADIUS + 1, 2 * PEAK_FREQ_RADIUS + 1), mode="constant", cval=-np.inf)
    mask = (spec == local_max) & (spec > max(float(spec.max()) - PEAK_FLOOR_DB, ABSOLUTE_FLOOR_DB))
    t, f = np.nonzero(mask)
    if t.size == 0:
        return t.astype(np.int32), f.astype(np.int32)
    cap = 8 * PEAKS_PER_SECOND * (spec.shape[0] / FRAMES_PER_SECOND + 1)
    if t.size > cap:  # flat plateaus (synthetic input): bound the work below
        strongest = np.argsort(-spec[t, f], kind="stable")[: int(cap)]
        t, f = t[strongest], f[strongest]
    order = np.lexsort((f, t))
    t, f = t[order], f[order]
    strength = spec[t, f]
    # keep a peak when fewer than PEAKS_PER_SECOND peaks within +-0.5 s are stronger: a density
    # cap that, unlike fixed one-second blocks, does not depend on where an excerpt starts
    # (and volume does not change the ranking)
    half = int(FRAMES_PER_SECOND // 2)
    lo = np.searchsorted(t, t - half, side="left")
    hi = np.searchsorted(t, t + half, side="right")
    width = int((hi - lo).max())
    idx = lo[:, None] + np.arange(width)[None, :]
    inside = idx < hi[:, None]
    idx = np.minimum(idx, t.size - 1)
    own = np.arange(t.size)[:, None]
    stronger = (strength[idx] > strength[:, None]) | ((strength[idx] == strength[:, None]) & (idx < own))
    keep = (stronger & inside).sum(axis=1) < PEAKS_PER_SECOND
    return t[keep].astype(np.int32), (f[keep] + MIN_BIN).astype(np.int32)


def landmarks(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Landmarks of mono audio: an (n, 2) uint32 array of (hash, anchor frame), sorted by
    frame then hash, deterministic.  Frames are 16 ms (HOP / SAMPLE_RATE)."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if sample_rate != SAMPLE_RATE:
        x = _resample_by(x, Fraction(SAMPLE_RATE, int(sample_rate)))
    t, f = peaks(x)
    return pair_peaks(t, f)


def pair_peaks(t: np.ndarray, f: np.ndarray) -> np.ndarray:
    n = t.size
    if n < 2:
        return np.zeros((0, 2), dtype=np.uint32)
    anchors = np.arange(n)[:, None]
    targets = anchors + np.arange(1, PAIR_WINDOW + 1)[None, :]
    valid = targets < n
    targets = np.minimum(targets, n - 1)
    dt = t[targets] - t[anchors]
    df = f[targets] - f[anchors]
    valid &= (dt >= MIN_DT) & (dt <= MAX_DT) & (np.abs(df) <= MAX_DF)
    valid &= np.cumsum(valid, axis=1) <= FAN_OUT  # the FAN_OUT nearest in time
    a = np.broadcast_to(anchors, targets.shape)[valid]
    f1 = f[a].astype(np.uint32) // FREQ_QUANT
    dq = (df[valid] + MAX_DF).astype(np.uint32) // FREQ_QUANT
    hashes = (f1 << 13) | (dq << 6) | (dt[valid].astype(np.uint32) // TIME_QUANT)
    out = np.stack([hashes, t[a].astype(np.uint32)], axis=1)
    order = np.lexsort((out[:, 0], out[:, 1]))
    return np.ascontiguousarray(out[order])


def speed_variants(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, speeds: Sequence[float] = QUERY_SPEEDS) -> list[np.ndarray]:
    """Landmarks of the query as if it were played at each of `speeds` times its length
    (1.05: a copy sped up by 5 % is stretched back).  Times stay in the stretched frames,
    which are the bank item's frames when the factor undoes the change."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if sample_rate != SAMPLE_RATE:
        x = _resample_by(x, Fraction(SAMPLE_RATE, int(sample_rate)))
    return [landmarks(_resample(x, s)) for s in speeds]


# --------------------------------------------------------------------------- values


def _as_landmarks(lms: Any) -> np.ndarray:
    arr = np.asarray(lms)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.uint32)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"landmarks must be an (n, 2) array of (hash, frame), got shape {arr.shape}")
    return arr.astype(np.uint32, copy=False)


def _base64(lms: np.ndarray) -> str:
    return base64.b64encode(_as_landmarks(lms).astype(_LANDMARK_DTYPE).tobytes()).decode("ascii")


def encode_value(lms: np.ndarray) -> str:
    """The banked value: 'af1:' + base64 of little-endian uint32 (hash, frame) pairs."""
    return _VALUE_PREFIX + _base64(lms)


def encode_query(variants: Sequence[np.ndarray]) -> str:
    """The query value: 'af1q:' + every variant's landmarks, variant v's frames moved by
    v * VARIANT_STRIDE so that the offset votes of different variants never mix."""
    shifted = [_as_landmarks(lms) + np.array([0, i * VARIANT_STRIDE], dtype=np.uint32) for i, lms in enumerate(variants)]
    return _QUERY_PREFIX + _base64(np.concatenate(shifted))


def decode_value(value: str) -> np.ndarray:
    """The (n, 2) uint32 (hash, frame) landmarks of an 'af1:' or 'af1q:' value."""
    body = value.split(":", 1)[1]
    return np.frombuffer(base64.b64decode(body), dtype=_LANDMARK_DTYPE).reshape(-1, 2).astype(np.uint32)


def _equal_hash_hits(query_hashes: np.ndarray, banked_hashes: np.ndarray, banked_times: np.ndarray, entry: str) -> RowHits:
    """Every (query row, banked row) pair with equal hashes, as the postings index finds them,
    the banked rows all of one entry."""
    order = np.argsort(banked_hashes, kind="stable")
    lo = np.searchsorted(banked_hashes[order], query_hashes, "left")
    counts = np.searchsorted(banked_hashes[order], query_hashes, "right") - lo
    query_row = np.repeat(np.arange(len(query_hashes)), counts)
    banked_row = order[np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())]
    n = len(query_row)
    return RowHits(query_row, np.full(n, entry, dtype=object), np.zeros(n), banked_row, banked_times[banked_row])


# --------------------------------------------------------------------------- signal type


class AudioFingerprint(BagSignal):
    """Spectral-peak landmark fingerprint of audio (see the module docstring).

    Value: 'af1:' + base64 of packed little-endian uint32 (hash, anchor frame) pairs, about
    1 kB per second of audio (~95 landmarks/s).  Score: the share of landmarks (of the shorter
    item) that vote for one time offset; distance = 1 - score, matched when distance <=
    threshold and at least DEFAULT_MIN_VOTES votes agree.

    In the index each landmark is a row (its hash a postings key, its anchor a time). Speed
    changes are met at query time: a query's value (`compute_query`, prefix 'af1q:') holds its
    landmarks at each of QUERY_SPEEDS (`encode_query`)."""

    name = "audio_fingerprint"
    content_types = frozenset({"audio"})
    index_kind = "postings"
    row_radius = 0
    query_form = True
    unit = "1 - share of offset-consistent landmarks"
    default_threshold = 0.97  # score >= 0.03, with >= DEFAULT_MIN_VOTES votes: see benchmarks/eval_audio.py
    min_votes = DEFAULT_MIN_VOTES
    max_value_landmarks = 2_000_000

    def compute(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        lms = landmarks(self.decode(content, limits))
        return self._too_few(lms) or Signal(encode_value(lms), None)

    def compute_query(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        """The query form: the landmarks of every speed variant (`encode_query`)."""
        variants = speed_variants(self.decode(content, limits))
        return self._too_few(variants[0]) or Signal(encode_query(variants), None)

    def _too_few(self, lms: np.ndarray) -> Signal | None:
        if lms.shape[0] < self.min_votes:
            return Signal(None, None, f"only {lms.shape[0]} landmarks: audio too short or silent to fingerprint")
        return None

    def decode(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> np.ndarray:
        """The audio's samples at SAMPLE_RATE, within the limits."""
        if isinstance(content, str):
            raise UnsupportedMedia("audio_fingerprint needs audio bytes, not text")
        if len(content) > limits.max_upload_bytes:
            raise TooLarge(f"audio has {len(content)} bytes, over the limit of {limits.max_upload_bytes}")
        return decode_audio(content, SAMPLE_RATE, limits.max_audio_seconds)

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not value.startswith((_VALUE_PREFIX, _QUERY_PREFIX)):
            raise InvalidInput(f"{self.name} must be a string 'af1:<base64 of uint32 (hash, frame) pairs>'")
        query = value.startswith(_QUERY_PREFIX)
        if query:
            value = _VALUE_PREFIX + value[len(_QUERY_PREFIX):]
        if not _VALUE_RE.match(value):
            raise InvalidInput(f"{self.name} must be 'af1:' followed by standard base64 (A-Z a-z 0-9 + / =)")
        try:
            raw = base64.b64decode(value[len(_VALUE_PREFIX):], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"{self.name} is not valid base64: {exc}") from None
        if len(raw) % 8:
            raise InvalidInput(f"{self.name} decodes to {len(raw)} bytes, not a whole number of 8-byte (hash, frame) pairs")
        n = len(raw) // 8
        if n < self.min_votes:
            raise InvalidInput(f"{self.name} holds {n} landmarks, fewer than the {self.min_votes} needed to match")
        if n > self.max_value_landmarks:
            raise InvalidInput(f"{self.name} holds {n} landmarks, over the limit of {self.max_value_landmarks}")
        lms = np.frombuffer(raw, dtype=_LANDMARK_DTYPE).reshape(n, 2)
        if int(lms[:, 0].max()) >= 1 << 21:
            raise InvalidInput(f"{self.name} holds a hash over 21 bits: not an af1 landmark")
        if np.any(np.diff(lms[:, 1].astype(np.int64)) < 0):
            raise InvalidInput(f"{self.name} landmarks must be sorted by frame")
        return _QUERY_PREFIX + value[len(_VALUE_PREFIX):] if query else value

    def rows(self, values: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(landmark hashes, the value each came from, each anchor's time in seconds)."""
        lms = [decode_value(v) for v in values]
        hashes = np.concatenate([lm[:, 0] for lm in lms]) if lms else np.zeros(0, np.uint32)
        owner = np.concatenate([np.full(lm.shape[0], i, np.int64) for i, lm in enumerate(lms)]) if lms else np.zeros(0, np.int64)
        times = np.concatenate([lm[:, 1] / FRAMES_PER_SECOND for lm in lms]) if lms else np.zeros(0)
        return hashes, owner, times

    def aggregate(self, query_times: np.ndarray, hits: RowHits, banked_rows: dict[str, int]) -> dict[str, float]:
        """Distance per entry from exact hash hits: the largest group of hits agreeing on one
        offset (bins of OFFSET_BIN frames plus the better neighbour), as a share of the shorter
        item's landmarks (the query's: of the speed variant that voted)."""
        query_frames = np.round(np.asarray(query_times, dtype=np.float64) * FRAMES_PER_SECOND).astype(np.int64)
        per_variant = np.bincount(query_frames // VARIANT_STRIDE)
        entries, which = hits.by_entry()
        offsets = np.round(hits.banked_time.astype(np.float64) * FRAMES_PER_SECOND).astype(np.int64) - query_frames[hits.query_row]
        bins = np.floor_divide(offsets, OFFSET_BIN)
        if not len(bins):
            return {}
        first, span = bins.min(), int(bins.max() - bins.min()) + 2  # one int64 key per (entry, bin): a 1-D sort
        keys, counts = np.unique(which * span + (bins - first), return_counts=True)  # sorted by entry, then bin
        entry_of, bin_of = np.divmod(keys, span)
        bin_of += first
        same_prev = np.r_[False, (entry_of[1:] == entry_of[:-1]) & (bin_of[1:] == bin_of[:-1] + 1)]
        same_next = np.r_[same_prev[1:], False]
        votes = counts + np.maximum(np.r_[0, counts[:-1]] * same_prev, np.r_[counts[1:], 0] * same_next)
        order = np.lexsort((votes, entry_of))  # by entry, then votes: each entry's best bin comes last
        last = order[np.r_[entry_of[order][1:] != entry_of[order][:-1], True]]
        out = {}
        for best, e in zip(last.tolist(), entry_of[last].tolist()):
            if votes[best] < self.min_votes:
                continue
            variant = int(round(-bin_of[best] * OFFSET_BIN / VARIANT_STRIDE))
            query_rows = int(per_variant[variant]) if 0 <= variant < len(per_variant) else len(query_times)
            entry = entries[e]
            denom = max(1, min(query_rows, int(banked_rows.get(entry, query_rows))))
            out[entry] = 1.0 - min(1.0, int(votes[best]) / denom)
        return out

    def distance(self, a: str, b: str) -> float:
        """a: the query's value ('af1:' or 'af1q:'), b: the banked one's; scored as a search would."""
        query_hashes, _, query_times = self.rows([a])
        banked_hashes, _, banked_times = self.rows([b])
        hits = _equal_hash_hits(query_hashes, banked_hashes, banked_times, "banked")
        if not len(hits):
            return 1.0
        return self.aggregate(query_times, hits, {"banked": len(banked_hashes)}).get("banked", 1.0)

    def score(self, distance: float) -> float:
        return min(1.0, max(0.0, 1.0 - distance))
