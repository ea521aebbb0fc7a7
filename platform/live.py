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
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .catalog import LOG_PREFIX, batch_signal, snapshot_folder
from .commitlog import CommitLog
from .entries import release_unused_memory
from .errors import StorageError
from .index import IndexParams, Shard
from .signals import SignalType
from .signals.base import RowHits
from .storage import ObjectStore
from .versions import IndexVersions, Manifest

log = logging.getLogger(__name__)

Hit = tuple[str, str, float, str | None]  # entry_id, bank, distance, the query form that hit (None: the identity or only one)


def slot_of(entry_id: str, slots: int) -> int:
    return zlib.crc32(entry_id.encode()) % slots


def delta_params(signal_type: SignalType) -> IndexParams:
    kind = {"exact": "exact", "postings": "postings", "stored": "stored", "binary": "binary_flat", "float": "flat"}[signal_type.index_kind]
    return IndexParams(type=kind, dim=signal_type.dim)


@dataclass
class LiveState:
    manifest: Manifest | None
    shards: list[Shard]  # this slot's published shards
    delta: Shard  # this slot's share of the entries banked since
    seq: int  # catalog commits applied
    dead_banks: set[str] = field(default_factory=set)  # deleted: their published rows never match again
    entry_rows: dict[str, int] = field(default_factory=dict)  # bag signals: rows per entry (all shards + delta)
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def version(self) -> str | None:
        return self.manifest.version if self.manifest else None

    @property
    def count(self) -> int:
        return sum(len(s) for s in self.shards)

    def locate(self, entry_id: str) -> list[tuple[Shard, np.ndarray]]:
        """Where an entry's rows are: (shard, rows) for each shard holding some."""
        found = [(shard, shard.rows_of(entry_id)) for shard in [*self.shards, self.delta]]
        return [(shard, rows) for shard, rows in found if len(rows)]


class LiveIndex:
    def __init__(self, store: ObjectStore, signal_type: SignalType, slot: int = 0, slots: int = 1):
        self.store, self.signal_type, self.slot, self.slots = store, signal_type, slot, slots
        self.versions = IndexVersions(store, signal_type.name)
        self.log = CommitLog(store, LOG_PREFIX)
        self._pointer_seq = 0
        self._swap = threading.Lock()
        self.state = self.load(self._published())
        release_unused_memory()

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
        if self.signal_type.bag:
            for shard in shards:
                state.entry_rows.update(shard.entry_rows())
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
        del old
        release_unused_memory()  # the old version's (once no search holds it)
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
            if len(delta):
                delta.enabled[delta.in_bank(name)] = False  # a bank created again under this name starts empty
        elif op == "add_entries":
            self._add(state, record["bank"], *batch_signal(self.store, record, self.signal_type.name))
        elif op == "update_entry" and "enabled" in record["changes"]:
            self._flag(state, record["entry_id"], bool(record["changes"]["enabled"]))
        elif op == "delete_entry":
            self._flag(state, record["entry_id"], False)

    def _add(self, state: LiveState, bank: str, entry_ids: list[str], values: list[Any], enabled: list[bool]) -> None:
        """Add the entries (their ids, this signal's values, enabled flags) that fall in this slot."""
        if self.slots > 1:
            mine = [i for i, e in enumerate(entry_ids) if slot_of(e, self.slots) == self.slot]
            entry_ids, values, enabled = [entry_ids[i] for i in mine], [values[i] for i in mine], [enabled[i] for i in mine]
        if not entry_ids:
            return
        first = len(state.delta)
        if self.signal_type.bag:  # many rows per entry
            rows, owner, times = self.signal_type.rows(values)
        else:
            rows, owner, times = self.signal_type.encode(values), np.arange(len(values)), None
        ids = np.asarray(entry_ids, dtype=object)
        state.delta.add(ids[owner], [bank] * len(owner), rows, times)
        state.delta.enabled[first:] = np.asarray(enabled, dtype=bool)[owner]
        if self.signal_type.bag:
            for i, count in zip(*np.unique(owner, return_counts=True)):
                state.entry_rows[ids[i]] = int(count)

    def _flag(self, state: LiveState, entry_id: str, enabled: bool) -> None:
        for shard, rows in state.locate(entry_id):
            if shard.enabled is None:
                shard.enabled = np.ones(len(shard), dtype=bool)
            shard.enabled[rows] = enabled

    # -- searching -----------------------------------------------------------------------------
    def _catch_up_or_serve(self, state: LiveState, min_seq: int) -> None:
        try:
            self.catch_up(state, min_seq)
        except StorageError as exc:  # the store is down: answer from what is loaded
            log.warning("%s: catalog not followed (%s); answering from commit %d", self.signal_type.name, exc, state.seq)

    def search_values(self, values: list, k: int, radius: float, banks: set[str] | None = None, min_seq: int = 0) -> tuple[str | None, list[list[Hit]]]:
        """Per canonical query value, up to k hits within `radius`, nearest first: what a searcher
        answers. A bag value's rows are aggregated by its type (`search_bags`); a value of several
        forms (`query_rows`, e.g. pdq's dihedral query) answers per entry with its nearest form
        (the first on a tie), named."""
        st = self.signal_type
        if st.bag:
            return self.search_bags(values, k, radius, banks, min_seq)
        rows, owner = st.query_rows(values)
        version, per_row = self.search(rows, k, radius, banks, min_seq)
        first = np.searchsorted(owner, np.arange(len(values)))
        best: list[dict[str, Hit]] = [{} for _ in values]
        for row, (value, hits) in enumerate(zip(owner.tolist(), per_row)):
            form = row - int(first[value])
            for entry, bank, distance, _ in hits:
                if entry not in best[value] or distance < best[value][entry][2]:
                    best[value][entry] = (entry, bank, distance, st.forms[form] if form else None)
        return version, [sorted(found.values(), key=lambda h: h[2])[:k] for found in best]

    def quick(self, min_seq: int = 0) -> bool:
        """Whether searching a value now is short work that holds the GIL: a hash index (not a
        float one, whose faiss search releases the GIL; not a bag, of many rows each) that has
        applied the catalog up to `min_seq` (no catch-up reading the store)."""
        return self.signal_type.index_kind != "float" and not self.signal_type.bag and self.state.seq >= min_seq

    def search(self, queries: np.ndarray, k: int, radius: float, banks: set[str] | None = None, min_seq: int = 0) -> tuple[str | None, list[list[Hit]]]:
        """Per query row, up to k (entry_id, bank, distance, None) within `radius`, nearest first,
        from the published shards and the delta, after applying the catalog up to `min_seq`."""
        state = self.state
        self._catch_up_or_serve(state, min_seq)
        found: list[list[Hit]] = [[] for _ in range(len(queries))]
        for shard in state.shards:
            self._collect(found, shard, shard.search_rows(queries, k, radius, banks))
        with state.lock:  # the delta grows under catch_up
            self._collect(found, state.delta, state.delta.search_rows(queries, k, radius, banks))
        return state.version, [sorted(hits, key=lambda h: h[2])[:k] for hits in found]

    def search_bags(self, values: list, k: int, radius: float, banks: set[str] | None = None, min_seq: int = 0,
                    row_k: int = 1000) -> tuple[str | None, list[list[Hit]]]:
        """As `search`, for bag signals: per query value, every row is searched within the type's
        row radius, and the hits are aggregated per entry into the type's distance."""
        st, state = self.signal_type, self.state
        rows, owner, times = st.rows(values)
        hits, banks_hit = self._search_rows(state, rows, row_k, st.row_radius, banks, min_seq)
        first = np.searchsorted(owner, np.arange(len(values)))  # rows are grouped by value, in order
        value_of = owner[hits.query_row]
        out = []
        for i in range(len(values)):
            mine = value_of == i
            if not mine.any():
                out.append([])
                continue
            own = RowHits(hits.query_row[mine] - first[i], hits.entry[mine], hits.distance[mine], hits.banked_row[mine], hits.banked_time[mine])
            bank_of = dict(zip(own.entry.tolist(), banks_hit[mine].tolist()))
            with state.lock:
                counts = {e: state.entry_rows.get(e, 1) for e in bank_of}
            scored = st.aggregate(times[owner == i], own, counts)
            out.append(sorted(((e, bank_of[e], d, None) for e, d in scored.items() if d <= radius), key=lambda h: h[2])[:k])
        return state.version, out

    def _search_rows(self, state: LiveState, rows: np.ndarray, k: int, radius: float, banks, min_seq: int) -> tuple[RowHits, np.ndarray]:
        """Every hit of the query rows within radius, in the published shards and the delta, and each hit's bank."""
        self._catch_up_or_serve(state, min_seq)
        parts = []
        for number, shard in enumerate([*state.shards, state.delta]):
            with state.lock if shard is state.delta else nullcontext():
                query, found, distance = shard.search_pairs(rows, k, radius, banks)
                times = shard.times[found] if shard.times is not None else np.zeros(len(found), dtype=np.float32)
                parts.append((query, shard.ids_of(found), distance, (number << 40) | found, times, shard.banks_of(found)))
        query, entry, distance, banked_row, times, bank = (np.concatenate(column) for column in zip(*parts))
        return RowHits(query, entry, distance, banked_row, times), bank

    @staticmethod
    def _collect(found: list[list[Hit]], shard: Shard, rows: list[list[tuple[int, float]]]) -> None:
        for hits, query_rows in zip(found, rows):
            hits.extend((shard.entry_id(r), shard.bank(r), d, None) for r, d in query_rows)

    def values(self, entry_ids: Iterable[str], min_seq: int = 0) -> dict[str, Any]:
        """The stored value of each entry that has one and may match (enabled, in an enabled
        bank), after applying the catalog up to `min_seq`: what a verifier looks up."""
        state = self.state
        self._catch_up_or_serve(state, min_seq)
        out = {}
        with state.lock:
            for entry_id in entry_ids:
                for shard, rows in state.locate(entry_id):
                    live = rows[shard.live_rows(rows)]
                    if len(live):
                        out[entry_id] = shard.values[live[-1]]
        return out

    def status(self) -> dict[str, Any]:
        state = self.state
        return {"version": state.version, "count": state.count, "live_delta": int(np.count_nonzero(state.delta.enabled)) if len(state.delta) else 0, "catalog_seq": state.seq}
