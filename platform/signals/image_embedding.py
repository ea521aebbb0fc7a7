"""The learned image copy-detection descriptor as a signal type (see `platform/models/`)."""

from __future__ import annotations

import threading
from typing import Sequence

from ..media import open_image
from ..settings import LimitSettings
from .base import FloatVectorSignal, Signal

FALLBACK_THRESHOLD = 0.2  # cosine distance, for a model that carries no calibrated threshold


class ImageEmbedding(FloatVectorSignal):
    name = "image_embedding"
    content_types = frozenset({"photo"})
    dim = 256
    needs_model = True

    def __init__(self, descriptor=None):
        """`descriptor`: a loaded model to use as is (evaluating one before it is recorded)."""
        self.source, self.store, self._descriptor, self._config = "promoted", None, descriptor, None
        self._lock = threading.Lock()

    def configure(self, settings) -> None:
        from ..storage import ObjectStore

        source = settings.image_model
        store = ObjectStore.from_settings(settings)
        if (source, store.uri) != (self.source, getattr(self.store, "uri", None)):
            self.source, self.store, self._descriptor, self._config = source, store, None, None

    @property
    def descriptor(self):
        """The model, loaded once per process on first use (GPU when torch sees one)."""
        with self._lock:
            if self._descriptor is None:
                from ..models.registry import resolve_model

                self._descriptor = resolve_model(self.source, self.store)
                if self._descriptor.config.dim != self.dim:
                    raise ValueError(f"model {self._descriptor.config.version} gives {self._descriptor.config.dim}-d vectors, not {self.dim}")
        return self._descriptor

    def warm_up(self) -> None:
        self.descriptor

    @property
    def config(self):
        """The model's config: from the loaded model, else read alone (no torch, no weights)."""
        if self._descriptor is not None:
            return self._descriptor.config
        with self._lock:
            if self._config is None:
                from ..models.registry import resolve_config

                self._config = resolve_config(self.source, self.store)
        return self._config

    @property
    def default_threshold(self) -> float:
        threshold = self.config.threshold
        return FALLBACK_THRESHOLD if threshold is None else threshold

    @property
    def model_version(self) -> str:
        return self.config.version

    def compute(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        return self.compute_batch([content], limits)[0]

    def compute_batch(self, contents: Sequence[bytes | str], limits: LimitSettings = LimitSettings()) -> list[Signal]:
        images = [open_image(c if isinstance(c, bytes) else c.encode(), limits.max_image_pixels) for c in contents]
        return [Signal(v.tolist()) for v in self.descriptor.embed([self.view(im) for im in images])]

    @staticmethod
    def view(image):
        """What of a decoded image the model sees (all of it, in colour)."""
        return image
