"""Near-duplicate text: a 1-bit (b-bit, b = 1) MinHash signature of the normalised text.

Li & König's b-bit MinHash keeps only the lowest bit of each of `dim` min-hashes. Two texts
whose shingle sets have Jaccard similarity J agree on each bit with probability (1 + J) / 2,
so the Hamming distance d between their signatures estimates J ≈ 1 - 2 d / dim, and the
signature is an ordinary binary hash: the binary (faiss) index, Hamming thresholds and hex
values all work unchanged.

Shingles are character 5-grams of `normalize_text(text)` (case, punctuation, spacing and
Unicode forms folded away first), the same for every text length. Measured when the scheme
was chosen, on an earlier draw of Debian documentation passages (benchmarks/eval_text.py
--per-edit 150: 500 in the bank, threshold J ≳ 0.5): with
3 % character typos, character 5-grams find 100 % of copies and word 3-grams 9 % (one typo
breaks three word shingles out of a few dozen, but only five character shingles out of
hundreds); unrelated passages still sit at J ≈ 0.02 (median) and no wrong pair came within the
threshold. 4-grams catch a little more but bring wrong pairs closer (one false positive then;
none on the larger corpus the script reads now),
7-grams lose typo recall. One scheme for every length matters: switching to word shingles
for long texts and character shingles for short ones would make a short copy incomparable
with its longer original. 512 bits estimate J more tightly but found no more (recall 0.92 vs
0.94) and would make the binary multi-hash index impractical (32-bit chunks).

Everything is seeded and uses fixed-width integer arithmetic (no Python `hash()`), so a
signature is the same in every process, on every machine and across releases.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np

from ..media import decode_text
from ..settings import LimitSettings
from .base import BinaryHashSignal, Signal
from .hashes import normalize_text

# Fewer words than this after normalisation: no value. Such a text has under ~20 character
# 5-grams, so one typo changes a quarter or more of them and unrelated short phrases share
# large fractions ("see the manual page"): its Jaccard says little. text_exact covers them.
MIN_WORDS = 5

_SEED = 0x5EED_7E47  # fixed forever: changing it (or the shingling) changes every stored signature
_BLOCK = 512  # shingles per vectorised block: 512 x dim uint64 = 1 MiB at dim 256 (stays in cache; measured fastest)

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_POLY = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective, well-avalanched mix of uint64 values (wraps mod 2^64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _char_shingles(text: str, k: int) -> np.ndarray:
    """64-bit hashes of every k-character window of `text` (one window when it is shorter)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    n = max(1, codes.size - k + 1)
    if codes.size < k:
        codes = np.concatenate([codes, np.zeros(k - codes.size, dtype=np.uint64)])
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):  # polynomial hash of the window, then a mix: stable and vectorised
            h = h * _POLY + codes[j : j + n] + np.uint64(1)
        return _mix64(h)


class TextMinHash(BinaryHashSignal):
    """1-bit MinHash of character 5-gram shingles: Hamming distance d estimates Jaccard 1 - 2d/dim."""

    name = "text_minhash"
    content_types = frozenset({"text"})
    dim = 256
    # Hamming bits: estimated Jaccard >= 1 - 2*63/256 ≈ 0.51. From benchmarks/eval_text.py:
    # precision 1.0 and recall 0.94 over 13 edit kinds; the closest wrong pair (templated
    # man-page options, near-identical changelog entries) sat at 70 bits and 72 would admit two
    # false positives, so 63 keeps a margin. 63 is also exactly the radius the binary
    # multi-hash index searches without loss at dim 256 (16 chunks, 3 flips per chunk).
    default_threshold = 63
    shingle_size: ClassVar[int] = 5
    min_words: ClassVar[int] = MIN_WORDS

    def __init__(self) -> None:
        rng = np.random.default_rng(_SEED)
        # dim universal hashes x -> a*x + b (mod 2^64), a odd: each a permutation of the 64-bit
        # space, applied to shingle hashes that are already mixed.
        self._a = rng.integers(0, 2**64, size=self.dim, dtype=np.uint64, endpoint=False) | np.uint64(1)
        self._b = rng.integers(0, 2**64, size=self.dim, dtype=np.uint64, endpoint=False)

    # -- computing -------------------------------------------------------------------------

    def compute(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        return self.compute_batch([content], limits)[0]

    def compute_batch(self, contents: Sequence[bytes | str], limits: LimitSettings = LimitSettings()) -> list[Signal]:
        results: list[Signal | None] = [None] * len(contents)
        shingles: list[np.ndarray] = []
        hashed: list[int] = []
        for i, content in enumerate(contents):
            normalized = normalize_text(decode_text(content, limits.max_text_chars))
            words = normalized.count(" ") + 1 if normalized else 0
            if words < self.min_words:
                results[i] = Signal(
                    None,
                    reason=f"text has {words} word(s) after normalisation, fewer than {self.min_words}: "
                    "too short for a meaningful near-duplicate hash (text_exact still matches it)",
                )
                continue
            shingles.append(self.shingles(normalized))
            hashed.append(i)
        if hashed:
            for i, value in zip(hashed, self.signatures(shingles)):
                results[i] = Signal(value)
        return results  # type: ignore[return-value]

    def shingles(self, normalized: str) -> np.ndarray:
        """The 64-bit shingle hashes of one normalised text."""
        return _char_shingles(normalized, self.shingle_size)

    def signatures(self, shingle_sets: Sequence[np.ndarray]) -> list[str]:
        """Hex signatures of several shingle-hash sets, vectorised across all of them in blocks."""
        lengths = np.fromiter((s.size for s in shingle_sets), dtype=np.int64, count=len(shingle_sets))
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        flat = np.concatenate(shingle_sets)
        mins = np.full((len(shingle_sets), self.dim), np.iinfo(np.uint64).max, dtype=np.uint64)
        buffer = np.empty((min(_BLOCK, flat.size), self.dim), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for lo in range(0, flat.size, _BLOCK):
                hi = min(lo + _BLOCK, flat.size)
                permuted = buffer[: hi - lo]
                np.multiply(flat[lo:hi, None], self._a[None, :], out=permuted)
                permuted += self._b[None, :]
                # the sets overlapping [lo, hi): their starts, clipped to the block
                first = int(np.searchsorted(starts, lo, side="right")) - 1
                last = int(np.searchsorted(starts, hi, side="left"))
                local = np.clip(starts[first:last], lo, hi) - lo
                keep = np.concatenate([local[1:] > local[:-1], [True]])  # skip empty sets (none here)
                rows = np.arange(first, last)[keep]
                partial = np.minimum.reduceat(permuted, local[keep], axis=0)
                mins[rows] = np.minimum(mins[rows], partial)
            # the b = 1 bit of each min-hash: the low bit of a mix of it (the low bit of a*x + b
            # alone depends only on x's low bit, so the same shingle would give correlated bits)
            bits = (_mix64(mins) & np.uint64(1)).astype(np.uint8)
        packed = np.packbits(bits, axis=1)
        return [row.tobytes().hex() for row in packed]

    # -- comparing -------------------------------------------------------------------------

    def jaccard(self, distance: float) -> float:
        """The Jaccard similarity a Hamming distance estimates, clipped to [0, 1]."""
        return min(1.0, max(0.0, 1.0 - 2.0 * float(distance) / self.dim))

    def score(self, distance: float) -> float:
        return self.jaccard(distance)
