"""`ShardSearcher`: one slot of one signal type's index (see `platform/live.py`), searched in
batches across requests, kept current by a background thread."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from ray import serve

from mediamatch.platform.errors import MediamatchError, NotReady, StorageError
from mediamatch.platform.live import LiveIndex
from mediamatch.platform.settings import Settings
from mediamatch.platform.signals import get_signal_type
from mediamatch.platform.storage import ObjectStore

log = logging.getLogger("ray.serve")


@serve.deployment
class ShardSearcher:
    def __init__(self, settings: dict[str, Any], signal_type: str, slot: int, slots: int):
        self.settings = Settings(**settings)
        self.signal_type = get_signal_type(signal_type)
        self.slot, self.slots = slot, slots
        self.live: LiveIndex | None = None
        self.not_ready = "loading"
        self._load()  # when the store is down, the replica starts anyway, not ready, and retries
        self.search.set_max_batch_size(self.settings.serve.max_batch_size)
        self.search.set_batch_wait_timeout_s(self.settings.serve.batch_wait_ms / 1000)
        self._stop = threading.Event()
        threading.Thread(target=self._follow, name=f"follow-{signal_type}-{slot}", daemon=True).start()

    def _load(self) -> None:
        try:
            self.live = LiveIndex(ObjectStore.from_settings(self.settings), self.signal_type, self.slot, self.slots)
            self.not_ready = None
        except MediamatchError as exc:
            self.not_ready = f"{self.signal_type.name} slot {self.slot}: cannot load the index: {exc}"
            log.warning("%s; retrying every %s s", self.not_ready, self.settings.serve.poll_seconds)

    def _follow(self) -> None:
        while not self._stop.wait(self.settings.serve.poll_seconds):
            if self.live is None:
                self._load()
                continue
            try:
                self.live.refresh()
            except StorageError as exc:  # keep serving the loaded state; try again next period
                log.warning("%s: object store unreachable, serving what is loaded: %s", self.signal_type.name, exc)
            except Exception:
                log.exception("%s: refreshing the index failed", self.signal_type.name)

    @serve.batch
    async def search(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each request: `values` (canonical signal values), `k`, `radius`, `banks` (or None),
        `min_seq` (catalog commits the caller has seen). Requests with the same bank filter share
        one faiss call."""
        return await asyncio.to_thread(self._search_batch, requests)

    def _search_batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.live is None:
            raise NotReady(self.not_ready)
        out: list[dict[str, Any] | None] = [None] * len(requests)
        groups: dict[tuple | None, list[int]] = {}
        for i, request in enumerate(requests):
            key = tuple(sorted(request["banks"])) if request.get("banks") is not None else None
            groups.setdefault(key, []).append(i)
        for key, members in groups.items():
            values = [v for i in members for v in requests[i]["values"]]
            search = self.live.search_bags if self.signal_type.bag else self.live.search
            version, hits = search(
                values if self.signal_type.bag else self.signal_type.encode(values),
                max(requests[i]["k"] for i in members),
                max(requests[i]["radius"] for i in members),
                None if key is None else set(key),
                max(requests[i].get("min_seq", 0) for i in members),
            )
            start = 0
            for i in members:
                request, n = requests[i], len(requests[i]["values"])
                mine = [[h for h in row if h[2] <= request["radius"]][: request["k"]] for row in hits[start : start + n]]
                out[i] = {"version": version, "hits": mine}
                start += n
        return out

    def status(self) -> dict[str, Any]:
        if self.live is None:
            return {"ready": False, "reason": self.not_ready, "version": None, "count": 0, "live_delta": 0, "catalog_seq": 0}
        return {"ready": True, **self.live.status()}

    def __del__(self):
        self._stop.set()


