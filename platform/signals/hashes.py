"""Perceptual and cryptographic hashes: PDQ for photos, MD5 for any file, normalised text."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Sequence

import numpy as np
import pdqhash
from PIL import Image

from ..media import decode_text, open_image
from ..settings import LimitSettings
from .base import BinaryHashSignal, ExactSignal, Signal

PDQ_MIN_QUALITY = 50

# A query's 8 dihedral forms: pdqhash.compute_dihedral's transposed form is exact (PDQ filters
# rows and columns alike), its flipped and turned forms are not (its box filter is off-centre, so
# they land 20-40 bits from the hash of the flipped pixels on 256-512 px photos; see
# benchmarks/bench_dihedral.py). So the query is flipped in pixels three times and each of the
# four images gives its own hash and its transpose's: per pass, the flip made, and the names of
# the two forms, each the turn or flip that makes the query out of a banked photo it matches
# (rotN: turned N degrees counterclockwise; flipx: mirrored left-right; flipy: upside down;
# transpose / transverse: mirrored about the main / the other diagonal).
_TRANSPOSED = 6  # pdqhash.compute_dihedral's index of the transposed form
DIHEDRAL_PASSES = (
    (None, "identity", "transpose"),
    (Image.Transpose.FLIP_LEFT_RIGHT, "flipx", "rot270"),
    (Image.Transpose.FLIP_TOP_BOTTOM, "flipy", "rot90"),
    (Image.Transpose.ROTATE_180, "rot180", "transverse"),
)
DIHEDRAL_TRANSFORMS = tuple(name for _, *names in DIHEDRAL_PASSES for name in names)


class PDQ(BinaryHashSignal):
    """Meta's PDQ: 256 bits; Hamming distance <= 31 is the industry's match threshold.

    A banked photo has one hash. A query photo is hashed in its 8 dihedral forms (`compute_query`:
    the hashes comma-separated in DIHEDRAL_TRANSFORMS' order, the plain hash first), so a turned
    or mirrored copy matches; each banked entry answers with the form nearest it."""

    name = "pdq"
    content_types = frozenset({"photo"})
    dim = 256
    default_threshold = 31
    query_form = True
    forms = DIHEDRAL_TRANSFORMS

    def compute(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        return self.compute_image(self._open(content, limits))

    def compute_query(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        return self.compute_image(self._open(content, limits), dihedral=True)

    @staticmethod
    def _open(content: bytes | str, limits: LimitSettings):
        return open_image(content if isinstance(content, bytes) else content.encode(), limits.max_image_pixels)

    def compute_image(self, image, dihedral: bool = False) -> Signal:
        # The reference hashers scale to at most 512x512 first; doing the same gives identical
        # hashes on the conformance set and is much faster on large photos.
        image.thumbnail((512, 512))
        if dihedral:
            passes = [pdqhash.compute_dihedral(_pixels(image if flip is None else image.transpose(flip))) for flip, _, _ in DIHEDRAL_PASSES]
            hashes, quality = [h for forms, _ in passes for h in (forms[0], forms[_TRANSPOSED])], passes[0][1]
        else:
            bits, quality = pdqhash.compute(_pixels(image))
            hashes = [bits]
        if quality < PDQ_MIN_QUALITY:
            return Signal(None, quality, f"pdq quality {quality} < {PDQ_MIN_QUALITY}: too little detail to hash")
        return Signal(",".join(np.packbits(bits.astype(np.uint8)).tobytes().hex() for bits in hashes), quality)

    def shown(self, value: str) -> str:
        return value.split(",", 1)[0]  # the plain form: the photo's hash

    def distance(self, a: str, b: str) -> float:
        """a: a hash or a query's forms, b: a banked hash; the nearest form's Hamming distance."""
        return min(BinaryHashSignal.distance(self, form, b) for form in a.split(","))

    def query_rows(self, values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """A query value's forms (one for a single hash, as a client sends) as index rows."""
        forms = [value.split(",") for value in values]
        return self.encode([f for form in forms for f in form]), np.repeat(np.arange(len(forms)), [len(f) for f in forms])


def _pixels(image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image))


class MD5(ExactSignal):
    name = "md5"
    content_types = frozenset({"photo", "video", "audio", "text"})
    digest_chars = 32

    def compute(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        data = content.encode() if isinstance(content, str) else content
        return Signal(hashlib.md5(data).hexdigest())


_PUNCTUATION = re.compile(r"[\W_]+", re.UNICODE)


def normalize_text(text: str) -> str:
    """NFKC, case-folded, punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCTUATION.sub(" ", text).split())


class TextExact(ExactSignal):
    """SHA-256 of the normalised text: equal after case, spacing, punctuation and Unicode folding."""

    name = "text_exact"
    content_types = frozenset({"text"})
    digest_chars = 64

    def compute(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        normalized = normalize_text(decode_text(content, limits.max_text_chars))
        if not normalized:  # else every text of punctuation alone ("!!!", "?? --") would match every other
            return Signal(None, reason="no letters or digits once punctuation is dropped: nothing to compare (md5 still matches the bytes)")
        return Signal(hashlib.sha256(normalized.encode()).hexdigest())
