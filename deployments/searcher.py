"""`ShardSearcher`: one slot of the indexes of one or more signal types (see `platform/live.py`),
searched in batches across requests, kept current by a background thread.

Which signal types a searcher holds is the layout's choice (`serve.layout`): every type in one
deployment (fewer replicas, one call per query for all of a photo's signals) or one deployment
per type (each scaled on its own)."""

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

from . import metrics

log = logging.getLogger("ray.serve")

Search = dict[str, Any]  # signal_type, values (canonical), k, radius, banks (or None), min_seq
LOOP_VALUES = 16  # at most this many query values in a batch searched on the event loop (see `_on_loop`)


@serve.deployment
class ShardSearcher:
    def __init__(self, settings: dict[str, Any], signal_types: list[str], slot: int, slots: int):
        self.settings = Settings(**settings)
        self.types = {name: get_signal_type(name) for name in signal_types}
        self.slot, self.slots = slot, slots
        self.live: dict[str, LiveIndex] = {}
        self.not_ready: dict[str, str] = {name: "loading" for name in self.types}
        for name in self.types:  # when the store is down, the replica starts anyway, not ready, and retries
            self._load(name)
        self.search.set_max_batch_size(self.settings.serve.max_batch_size)
        self.search.set_batch_wait_timeout_s(self.settings.serve.batch_wait_ms / 1000)
        self._stop = threading.Event()
        threading.Thread(target=self._follow, name=f"follow-slot-{slot}", daemon=True).start()

    def _load(self, name: str) -> None:
        try:
            self.live[name] = LiveIndex(ObjectStore.from_settings(self.settings), self.types[name], self.slot, self.slots)
            self.not_ready.pop(name, None)
        except MediamatchError as exc:
            self.not_ready[name] = f"{name} slot {self.slot}: cannot load the index: {exc}"
            log.warning("%s; retrying every %s s", self.not_ready[name], self.settings.serve.poll_seconds)

    def _follow(self) -> None:
        while not self._stop.wait(self.settings.serve.poll_seconds):
            for name in self.types:
                if name not in self.live:
                    self._load(name)
                    continue
                try:
                    self.live[name].refresh()
                except StorageError as exc:  # keep serving the loaded state; try again next period
                    log.warning("%s: object store unreachable, serving what is loaded: %s", name, exc)
                except Exception:
                    log.exception("%s: refreshing the index failed", name)
            metrics.record_index(self.slot, self.status())  # live delta and version, where they are known

    @serve.batch
    async def search(self, calls: list[list[Search]]) -> list[list[dict[str, Any]]]:
        """Each call: the searches of one query, one per signal type. Each answer: per search,
        the version searched and the hits of each value (`LiveIndex.search_values`': a query's
        forms included, the form that hit named). Searches of one signal type with the
        same bank filter share one faiss call, across the batch."""
        if self._on_loop(calls):
            return self._search_calls(calls)
        return await asyncio.to_thread(self._search_calls, calls)

    def _on_loop(self, calls: list[list[Search]]) -> bool:
        """Whether to search this batch on the event loop rather than in a thread: a few values
        of hash indexes, which read nothing from the store (`LiveIndex.quick`). Their numpy and
        Python code holds the GIL, so a thread buys no parallelism and trades the GIL with the
        loop at every switch interval (measured at 1M PDQ hashes, 8 clients, co_located: 425
        req/s and a 12.7 ms search call in a thread, 614 req/s and 3.4 ms on the loop)."""
        searches = [search for call in calls for search in call]
        return sum(len(s["values"]) for s in searches) <= LOOP_VALUES and all(
            self.live[s["signal_type"]].quick(s.get("min_seq", 0)) for s in searches if s["signal_type"] in self.live)

    def _search_calls(self, calls: list[list[Search]]) -> list[list[dict[str, Any]]]:
        flat = [search for call in calls for search in call]
        answers = self._search_batch(flat)
        out, start = [], 0
        for call in calls:
            out.append(answers[start : start + len(call)])
            start += len(call)
        return out

    def _search_batch(self, searches: list[Search]) -> list[dict[str, Any]]:
        out: list[dict[str, Any] | None] = [None] * len(searches)
        groups: dict[tuple, list[int]] = {}
        for i, search in enumerate(searches):
            banks = tuple(sorted(search["banks"])) if search.get("banks") is not None else None
            groups.setdefault((search["signal_type"], banks), []).append(i)
        for (name, banks), members in groups.items():
            live = self.live.get(name)
            if live is None:
                raise NotReady(self.not_ready.get(name) or f"{name} is not served by this searcher")
            values = [v for i in members for v in searches[i]["values"]]
            version, hits = live.search_values(
                values,
                max(searches[i]["k"] for i in members),
                max(searches[i]["radius"] for i in members),
                None if banks is None else set(banks),
                max(searches[i].get("min_seq", 0) for i in members),
            )
            start = 0
            for i in members:
                search, n = searches[i], len(searches[i]["values"])
                mine = [[h for h in row if h[2] <= search["radius"]][: search["k"]] for row in hits[start : start + n]]
                out[i] = {"version": version, "hits": mine}
                start += n
        return out

    def status(self) -> dict[str, dict[str, Any]]:
        """Per signal type held: whether it is loaded, the version served, entries, live delta."""
        out = {}
        for name in self.types:
            live = self.live.get(name)
            if live is None:
                out[name] = {"ready": False, "reason": self.not_ready[name], "version": None, "count": 0, "live_delta": 0, "catalog_seq": 0}
            else:
                out[name] = {"ready": True, "reason": "", **live.status()}
        return out

    def __del__(self):
        self._stop.set()
