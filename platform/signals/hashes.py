"""Perceptual and cryptographic hashes: PDQ for photos, MD5 for any file, normalised text."""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np
import pdqhash

from ..media import decode_text, open_image
from ..settings import LimitSettings
from .base import BinaryHashSignal, ExactSignal, Signal

PDQ_MIN_QUALITY = 50


class PDQ(BinaryHashSignal):
    """Meta's PDQ: 256 bits; Hamming distance <= 31 is the industry's match threshold."""

    name = "pdq"
    content_types = frozenset({"photo"})
    dim = 256
    default_threshold = 31

    def compute(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        image = open_image(content if isinstance(content, bytes) else content.encode(), limits.max_image_pixels)
        return self.compute_image(image)

    def compute_image(self, image) -> Signal:
        # The reference hashers scale to at most 512x512 first; doing the same gives identical
        # hashes on the conformance set and is much faster on large photos.
        image.thumbnail((512, 512))
        bits, quality = pdqhash.compute(np.ascontiguousarray(np.asarray(image)))
        if quality < PDQ_MIN_QUALITY:
            return Signal(None, quality, f"pdq quality {quality} < {PDQ_MIN_QUALITY}: too little detail to hash")
        return Signal(np.packbits(bits.astype(np.uint8)).tobytes().hex(), quality)


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
