"""The registry of signal types this deployment serves."""

from __future__ import annotations

from typing import Iterable

from ..errors import InvalidInput
from ..settings import LimitSettings
from .base import Signal, SignalType
from .audio import AudioFingerprint
from .hashes import MD5, PDQ, TextExact, normalize_text
from .image_embedding import ImageEmbedding
from .keypoints import Keypoints
from .text_embedding import TextEmbedding
from .text_minhash import TextMinHash
from .video import VPDQ
from .video_embedding import VideoEmbedding

_IMAGE = ImageEmbedding()
SIGNAL_TYPES: dict[str, SignalType] = {
    s.name: s
    for s in (PDQ(), _IMAGE, MD5(), Keypoints(), VPDQ(), VideoEmbedding(_IMAGE), AudioFingerprint(), TextExact(), TextMinHash(), TextEmbedding())
}

__all__ = ["SIGNAL_TYPES", "Signal", "SignalType", "compute_signals", "configure_signal_types", "get_signal_type", "normalize_text", "signal_types_for"]


def configure_signal_types(settings) -> None:
    """Point every type at what the settings name (the image model, its store): once per process."""
    for signal_type in SIGNAL_TYPES.values():
        signal_type.configure(settings)


def get_signal_type(name: str) -> SignalType:
    try:
        return SIGNAL_TYPES[name]
    except KeyError:
        raise InvalidInput(f"unknown signal type {name!r}; known: {', '.join(SIGNAL_TYPES)}") from None


def signal_types_for(content_type: str, include_models: bool = True) -> list[SignalType]:
    return [s for s in SIGNAL_TYPES.values() if content_type in s.content_types and (include_models or not s.needs_model)]


def compute_signals(
    content: bytes | str, content_type: str, types: Iterable[SignalType] | None = None, limits: LimitSettings = LimitSettings()
) -> dict[str, Signal]:
    """Every applicable signal of one item (cheap and model ones unless `types` says otherwise)."""
    chosen = list(types) if types is not None else signal_types_for(content_type)
    return {s.name: s.compute(content, limits) for s in chosen}
