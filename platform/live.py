"""What a shard searcher holds: its share of the published index plus everything banked since.

A `LiveIndex` serves one slot of one signal type: the published shards whose number is
`slot (mod slots)`, and a live delta (a flat index) of the entries committed to the catalog
after the version was built, split between slots by a hash of the entry id. It follows the
catalog's commit log, so a new entry matches once its commit is read, and a disable or delete
flips a flag that searches honour. `refresh()` (called periodically) follows the log and the
published pointer; a new version is loaded beside the old one and swapped in whole, so a
search in flight finishes on the state it started with.
"""

from __future__ import annotations

import logging
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .catalog import LOG_PREFIX, snapshot_folder
from .commitlog import CommitLog
from .errors import StorageError
from .index import IndexParams, Shard
from .signals import SignalType
from .storage import ObjectStore
from .versions import IndexVersions, Manifest

log = logging.getLogger(__name__)

Hit = tuple[str, str, float]  # entry_id, bank, distance


def slot_of(entry_id: str, slots: int) -> int:
    return zlib.crc32(entry_id.encode()) % slots


def delta_params(signal_type: SignalType) -> IndexParams:
    kind = {"exact": "exact", "binary": "binary_flat", "float": "flat"}[signal_type.index_kind]
    return IndexParams(type=kind, dim=signal_type.dim)


@dataclass
class LiveState:
    manifest: Manifest | None
    shards: list[Shard]  # this slot's published shards
    delta: Shard  # this slot's share of the entries banked since
    seq: int  # catalog commits applied
    dead_banks: set[str] = field(default_factory=set)  # deleted: their published rows never match again
    rows: dict[str, tuple[Shard, int]] | None = None  # entry id -> where; built on first need
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def version(self) -> str | None:
        return self.manifest.version if self.manifest else None

    @property
    def count(self) -> int:
        return sum(len(s) for s in self.shards)

    def locate(self, entry_id: str) -> tuple[Shard, int] | None:
        if self.rows is None:
            self.rows = {}
            for shard in [*self.shards, self.delta]:
                self.rows.update((eid, (shard, row)) for row, eid in enumerate(shard.entry_ids))
        return self.rows.get(entry_id)


class LiveIndex:
    def __init__(self, store: ObjectStore, signal_type: SignalType, slot: int = 0, slots: int = 1):
        self.store, self.signal_type, self.slot, self.slots = store, signal_type, slot, slots
        self.versions = IndexVersions(store, signal_type.name)
        self.log = CommitLog(store, LOG_PREFIX)
        self._pointer_seq = 0
        self._swap = threading.Lock()
        self.state = self.load(self._published())

    # -- loading and swapping ------------------------------------------------------------------
    def _published(self) -> str | None:
        self._pointer_seq = self.versions.pointer.head(self._pointer_seq)
        return self.versions.pointer.read(self._pointer_seq)["version"] if self._pointer_seq else None

    def load(self, version: str | None) -> LiveState:
        """This slot's shards of a version (or nothing), caught up with the catalog."""
        manifest = self.versions.get(version) if version else None
        shards, seq, banks = [], 0, {}
        if manifest is not None:
            shards = [self.versions.load_shard(manifest, n) for n in range(len(manifest.shards)) if n % self.slots == self.slot]
            seq, banks = manifest.catalog_seq or 0, dict(manifest.banks)
            if seq and not banks and self.store.exists(f"{snapshot_folder(seq)}/banks.json"):
                banks = {b["name"]: b.get("enabled", True) for b in self.store.get_json(f"{snapshot_folder(seq)}/banks.json")["banks"]}
        delta = Shard.empty(delta_params(self.signal_type))
        delta.bank_enabled = dict(banks)
        state = LiveState(manifest, shards, delta, seq)
        self.catch_up(state)
        return state

    def refresh(self) -> bool:
        """Follow the catalog; load and swap in a newly published version. True if swapped."""
        self.catch_up(self.state)
        version = self._published()
        if version == self.state.version:
            return False
        with self._swap:
            if version == self.state.version:
                return False
            fresh = self.load(version)
            self.catch_up(fresh)
            old, self.state = self.state, fresh
        log.info("%s slot %d: swapped %s for %s (%d entries, %d live)", self.signal_type.name, self.slot, old.version, fresh.version, fresh.count, len(fresh.delta))
        return True

    # -- following the catalog -----------------------------------------------------------------
    def catch_up(self, state: LiveState, min_seq: int = 0) -> None:
        """Apply every catalog commit after `state.seq` (none when it has seen `min_seq`)."""
        if min_seq and state.seq >= min_seq:
            return
        with state.lock:
            for seq, record in self.log.read_after(state.seq):
                self._apply(state, record)
                state.seq = seq

    def _apply(self, state: LiveState, record: dict[str, Any]) -> None:
        op, delta = record["op"], state.delta
        if op == "create_bank":
            delta.bank_enabled[record["bank"]["name"]] = record["bank"].get("enabled", True)
        elif op == "update_bank" and "enabled" in record["changes"]:
            name, enabled = record["name"], record["changes"]["enabled"]
            delta.bank_enabled[name] = enabled
            for shard in state.shards:
                if name not in state.dead_banks:
                    shard.bank_enabled[name] = enabled
        elif op == "delete_bank":
            name = record["name"]
            state.dead_banks.add(name)
            for shard in state.shards:
                shard.bank_enabled[name] = False
            if delta.banks is not None and len(delta):
                delta.enabled[delta.banks == name] = False  # a bank created again under this name starts empty
        elif op == "add_entries":
            self._add(state, record["bank"], record["entries"])
        elif op == "update_entry" and "enabled" in record["changes"]:
            self._flag(state, record["entry_id"], bool(record["changes"]["enabled"]))
        elif op == "delete_entry":
            self._flag(state, record["entry_id"], False)

    def _add(self, state: LiveState, bank: str, entries: Iterable[dict[str, Any]]) -> None:
        name = self.signal_type.name
        mine = [e for e in entries if e["signals"].get(name) is not None and slot_of(e["entry_id"], self.slots) == self.slot]
        if not mine:
            return
        first = len(state.delta)
        state.delta.add([e["entry_id"] for e in mine], [bank] * len(mine), self.signal_type.encode([e["signals"][name] for e in mine]))
        for row, entry in enumerate(mine, first):
            state.delta.enabled[row] = entry.get("enabled", True)
            if state.rows is not None:
                state.rows[entry["entry_id"]] = (state.delta, row)

    def _flag(self, state: LiveState, entry_id: str, enabled: bool) -> None:
        where = state.locate(entry_id)
        if where is not None:
            shard, row = where
            if shard.enabled is None:
                shard.enabled = np.ones(len(shard), dtype=bool)
            shard.enabled[row] = enabled

    # -- searching -----------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, radius: float, banks: set[str] | None = None, min_seq: int = 0) -> tuple[str | None, list[list[Hit]]]:
        """Per query, up to k (entry_id, bank, distance) within `radius`, nearest first, from the
        published shards and the delta, after applying the catalog up to `min_seq`."""
        state = self.state
        try:
            self.catch_up(state, min_seq)
        except StorageError as exc:  # the store is down: answer from what is loaded
            log.warning("%s: catalog not followed (%s); answering from commit %d", self.signal_type.name, exc, state.seq)
        found: list[list[Hit]] = [[] for _ in range(len(queries))]
        for shard in state.shards:
            self._collect(found, shard, shard.search_rows(queries, k, radius, banks))
        with state.lock:  # the delta grows under catch_up
            self._collect(found, state.delta, state.delta.search_rows(queries, k, radius, banks))
        return state.version, [sorted(hits, key=lambda h: h[2])[:k] for hits in found]

    @staticmethod
    def _collect(found: list[list[Hit]], shard: Shard, rows: list[list[tuple[int, float]]]) -> None:
        for hits, query_rows in zip(found, rows):
            hits.extend((shard.entry_ids[r], shard.banks[r] if shard.banks is not None else "", d) for r, d in query_rows)

    def status(self) -> dict[str, Any]:
        state = self.state
        return {"version": state.version, "count": state.count, "live_delta": int(np.count_nonzero(state.delta.enabled)) if len(state.delta) else 0, "catalog_seq": state.seq}
