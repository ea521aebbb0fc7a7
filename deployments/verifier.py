"""`Verifier`: geometric verification of a photo query's candidates (see `platform/verify.py`),
batched across requests.

It holds the published `keypoints` table and every entry banked since (as a searcher slot
holds its index, and with the searcher's code: new entries within a poll, disabled and deleted
ones dropped),
parses banked keypoints once into an LRU cache, and never touches banked media. A request
carries the query image's bytes (the ingress has them; its features, the image's and its
mirror image's, are computed here, once per query, and never travel in a response) and the
candidate entry ids retrieval found; the answer is each verifiable candidate's inliers.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from threading import Lock
from typing import Any

from ray import serve

from mediamatch.platform import verify
from mediamatch.platform.errors import MediamatchError, NotReady

from .searcher import ShardSearcher

class FeatureCache:
    """Parsed keypoints by entry id and value, least recently used dropped beyond `size`."""

    def __init__(self, size: int):
        self.size, self._items, self._lock = size, OrderedDict(), Lock()

    def get(self, entry_id: str, value: str) -> verify.Features:
        key = (entry_id, value)  # a reindex that recomputes an entry's value replaces it
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        features = verify.parse(value)
        with self._lock:
            self._items[key] = features
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return features


@serve.deployment
class Verifier(ShardSearcher.func_or_class):
    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings, ["keypoints"], 0, 1)  # one slot: every entry's keypoints
        self.cache = FeatureCache(self.settings.verify.cache_entries)
        self.verify.set_max_batch_size(self.settings.serve.max_batch_size)
        self.verify.set_batch_wait_timeout_s(self.settings.serve.batch_wait_ms / 1000)

    @property
    def keypoints(self):
        live = self.live.get("keypoints")
        if live is None:
            raise NotReady(self.not_ready.get("keypoints", "the keypoints table is not loaded"))
        return live

    def ready(self) -> bool:
        return self.keypoints is not None

    @serve.batch
    async def verify(self, requests: list[dict[str, Any]]) -> list[dict[str, Any] | MediamatchError]:
        """Each request: `content` (the query image's bytes), `candidates` (entry ids), `min_seq`
        (catalog commits the caller has seen). Each answer: entry id -> {inliers, ratio, mirrored}
        for the candidates with stored keypoints (those without have none to give), or the
        error that the query image raised."""
        return await asyncio.to_thread(lambda: [self.verify_one(**r) for r in requests])

    def verify_one(self, content: bytes, candidates: list[str], min_seq: int = 0) -> dict[str, Any] | MediamatchError:
        stored = self.keypoints.values(candidates, min_seq)
        try:
            fits = verify.verify_stored(content, stored, self.settings.limits.max_image_pixels, self.cache.get)
        except MediamatchError as exc:
            return exc
        return {entry_id: {"inliers": r.inliers, "ratio": r.ratio, "mirrored": r.mirrored} for entry_id, r in fits.items()}
