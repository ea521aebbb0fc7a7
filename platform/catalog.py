"""The bank catalog: banks and their entries, kept as a commit log in object storage.

Every change (create a bank, add a batch of entries, disable, delete) is one record of the
log at `catalog/log/`, committed with create-if-absent: it lands whole or not at all, and two
writers racing for the same number cannot both win; the loser re-reads the log, re-checks its
change against the new state and commits at the next number. State is the fold of the log,
from the newest snapshot (`catalog/snapshots/<seq>/`, Parquet) on. Deletes are tombstones in
the log. Media bytes are stored content-addressed at `media/<sha256>` so a reindex can
recompute signals. A reader that knows the sequence number it has seen (a shard searcher,
the reindex job's manifest) can follow every change after it.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from datetime import datetime, timezone
from itertools import islice
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field, field_validator

from .commitlog import CommitLog
from .entries import ENTRY_SCHEMA, SIGNAL_COLUMN, BankEntries, batch_segment, release_unused_memory
from .errors import Conflict, InvalidInput, NotFound
from .media import CONTENT_TYPES
from .storage import ObjectStore, sha256_hex

LOG_PREFIX = "catalog/log"
SNAPSHOT_PREFIX = "catalog/snapshots"
BATCH_PREFIX = "catalog/batches"
INLINE_MAX = 1000  # entries an add record holds as JSON; a larger batch goes to a Parquet file the record names
BANK_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


_id_lock = threading.Lock()
_last_ns = 0


def new_entry_id() -> str:
    """Unique without coordination and time-ordered: 'e_' + a strictly increasing ns clock + 40 random bits."""
    global _last_ns
    with _id_lock:
        _last_ns = max(time.time_ns(), _last_ns + 1)
        return f"e_{_last_ns:016x}{secrets.token_hex(5)}"


class Bank(BaseModel):
    name: str
    description: str = ""
    labels: list[str] = Field(default_factory=list)
    enabled: bool = True
    created_at: str = Field(default_factory=now_iso)
    thresholds: dict[str, float] = Field(default_factory=dict)  # per signal type, overriding the service's
    entry_count: int = 0

    @field_validator("thresholds")
    @classmethod
    def _known_signal_types(cls, thresholds: dict[str, float]) -> dict[str, float]:
        from .fusion import FUSED
        from .signals import SIGNAL_TYPES

        for name, value in thresholds.items():
            if name not in SIGNAL_TYPES and name != FUSED:
                raise ValueError(f"unknown signal type {name!r} in thresholds")
            if value < 0:
                raise ValueError(f"threshold for {name} must be >= 0")
        return thresholds

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not BANK_NAME.match(name):
            raise ValueError("bank names are 1-64 characters of a-z, 0-9, '_' and '-'")
        return name


class Entry(BaseModel):
    entry_id: str = Field(default_factory=new_entry_id)
    bank: str
    content_type: str
    signals: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    created_at: str = Field(default_factory=now_iso)
    media: str | None = None  # sha256 of the stored media bytes
    labels: list[str] = Field(default_factory=list)  # the entry's own, beside its bank's
    external_id: str | None = None  # the id a partner's list gave it (imports dedup by it)

    @field_validator("content_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in CONTENT_TYPES:
            raise ValueError(f"content_type must be one of {', '.join(CONTENT_TYPES)}")
        return value


class Catalog:
    """A process's view of the catalog. Thread-safe; many processes may write at once."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self.log = CommitLog(store, LOG_PREFIX)
        self.seq = 0
        self.banks: dict[str, dict[str, Any]] = {}
        self.entries: dict[str, BankEntries] = {}  # columnar: no Python object per entry
        self._loaded = False
        self._lock = threading.RLock()

    # -- reading the log -------------------------------------------------------------------
    def refresh(self) -> int:
        """Catch up with every commit since the last refresh; returns the sequence number seen."""
        with self._lock:
            bulky = not self._loaded
            if bulky:
                self._load_snapshot()
                self._loaded = True
            for seq, record in self.log.read_after(self.seq):
                self._apply(record)
                self.seq = seq
                bulky = bulky or "entries_file" in record
            if bulky:
                release_unused_memory()
            return self.seq

    def _apply(self, record: dict[str, Any]) -> None:
        op = record["op"]
        if op == "create_bank":
            self.banks[record["bank"]["name"]] = record["bank"]
            self.entries[record["bank"]["name"]] = BankEntries(record["bank"]["name"])
        elif op == "update_bank":
            self.banks[record["name"]].update(record["changes"])
        elif op == "delete_bank":
            self.banks.pop(record["name"], None)
            self.entries.pop(record["name"], None)
        elif op == "add_entries":
            bank = self.entries[record["bank"]]
            if "segment" in record:  # a batch this process wrote
                bank.add_segment(record["segment"])
            elif "entries_file" in record:
                bank.add_segment(batch_segment(_read_batch(self.store, record["entries_file"]), _json_types()))
            else:
                bank.add_rows(record["entries"])
        elif op == "update_entry":
            self.entries[record["bank"]].update(record["entry_id"], record["changes"])
        elif op == "delete_entry":
            self.entries[record["bank"]].delete(record["entry_id"])
        else:
            raise ValueError(f"unknown catalog op {op!r} in the log")

    def _commit(self, record: dict[str, Any], check, applied: dict[str, Any] | None = None) -> int:
        """Check `record` against the newest state and commit it as the next log record, then
        apply it (or `applied`, the same change in the form it had before it was written)."""
        with self._lock:
            while True:
                self.refresh()
                check()
                if self.log.try_append(self.seq + 1, {**record, "at": now_iso()}):
                    self.seq += 1
                    self._apply(applied or record)
                    return self.seq

    # -- banks -----------------------------------------------------------------------------
    def create_bank(self, name: str, description: str = "", labels: Iterable[str] = (), thresholds: dict[str, float] | None = None) -> Bank:
        try:
            bank = Bank(name=name, description=description, labels=list(labels), thresholds=thresholds or {})
        except ValueError as exc:
            raise InvalidInput(f"invalid bank {name!r}: {_first_error(exc)}") from None

        def check():
            if name in self.banks:
                raise Conflict(f"bank {name!r} already exists")

        self._commit({"op": "create_bank", "bank": bank.model_dump(exclude={"entry_count"})}, check)
        return self.get_bank(name)

    def update_bank(self, name: str, **changes: Any) -> Bank:
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - {"description", "labels", "enabled", "thresholds"}
        if unknown:
            raise InvalidInput(f"cannot change {', '.join(sorted(unknown))} of a bank")
        try:
            Bank(name="checked", **changes)
        except ValueError as exc:
            raise InvalidInput(f"invalid change to bank {name!r}: {_first_error(exc)}") from None
        self._commit({"op": "update_bank", "name": name, "changes": changes}, lambda: self._bank(name))
        return self.get_bank(name)

    def delete_bank(self, name: str) -> None:
        self._commit({"op": "delete_bank", "name": name}, lambda: self._bank(name))

    def get_bank(self, name: str) -> Bank:
        with self._lock:
            self.refresh()
            return Bank(**self._bank(name), entry_count=len(self.entries[name]))

    def list_banks(self) -> list[Bank]:
        with self._lock:
            self.refresh()
            return [Bank(**b, entry_count=len(self.entries[n])) for n, b in sorted(self.banks.items())]

    def _bank(self, name: str) -> dict[str, Any]:
        try:
            return self.banks[name]
        except KeyError:
            raise NotFound(f"no bank named {name!r}") from None

    # -- entries ---------------------------------------------------------------------------
    def add_entries(self, bank: str, entries: Iterable[Entry]) -> list[Entry]:
        """Add a batch of entries to a bank in one commit."""
        batch = [e.model_copy(update={"bank": bank}) for e in entries]
        self.add_entry_records(bank, [e.model_dump() for e in batch])
        return batch

    def add_entry_records(self, bank: str, records: list[dict[str, Any]]) -> None:
        """`add_entries` for records already in `Entry.model_dump()` form (bulk imports skip the models).

        A batch of more than INLINE_MAX entries is written as a Parquet file first and the log
        record names it: readers decode it column by column (a searcher reads only ids and
        signals), where a JSON record of a million entries took seconds to parse in every
        reader. The file is invisible until the commit names it, so a failed commit leaves only
        an unreferenced file."""
        if not records:
            return
        record: dict[str, Any] = {"op": "add_entries", "bank": bank, "entries": records}
        applied = record
        if len(records) > INLINE_MAX:
            key = f"{BATCH_PREFIX}/{records[0]['entry_id']}-{secrets.token_hex(4)}.parquet"
            batch = _batch_table(records)
            self.store.put(key, _parquet(batch))
            record = {"op": "add_entries", "bank": bank, "entries_file": key, "count": len(records)}
            applied = {**record, "segment": batch_segment(batch, _json_types())}
        self._commit(record, lambda: self._bank(bank), applied=applied)

    def update_entry(self, bank: str, entry_id: str, enabled: bool | None = None, metadata: dict | None = None) -> Entry:
        changes = {k: v for k, v in (("enabled", enabled), ("metadata", metadata)) if v is not None}
        self._commit(
            {"op": "update_entry", "bank": bank, "entry_id": entry_id, "changes": changes},
            lambda: self._entry(bank, entry_id),
        )
        return self.get_entry(bank, entry_id)

    def delete_entry(self, bank: str, entry_id: str) -> None:
        self._commit({"op": "delete_entry", "bank": bank, "entry_id": entry_id}, lambda: self._entry(bank, entry_id))

    def get_entry(self, bank: str, entry_id: str) -> Entry:
        with self._lock:
            self.refresh()
            return Entry(**self._entry(bank, entry_id))

    def list_entries(self, bank: str, limit: int = 100, cursor: str | None = None) -> tuple[list[Entry], str | None]:
        """A page of a bank's entries in id (time) order, and the cursor of the next page."""
        with self._lock:
            self.refresh()
            self._bank(bank)
            rows = list(islice(self.entries[bank].iter_entries(after=cursor), limit + 1))
            page = [Entry(**row) for row in rows[:limit]]
            return page, (page[-1].entry_id if len(rows) > limit else None)

    def _entry(self, bank: str, entry_id: str) -> dict[str, Any]:
        self._bank(bank)
        entry = self.entries[bank].get(entry_id)
        if entry is None:
            raise NotFound(f"no entry {entry_id!r} in bank {bank!r}")
        return entry

    # -- media -----------------------------------------------------------------------------
    def put_media(self, data: bytes) -> str:
        """Store media bytes content-addressed; returns their sha256. Idempotent."""
        digest = sha256_hex(data)
        self.store.put_if_absent(media_key(digest), data)
        return digest

    def get_media(self, digest: str) -> bytes:
        return self.store.get(media_key(digest))

    # -- snapshots -------------------------------------------------------------------------
    def snapshot(self) -> int:
        """Write the current state as Parquet (entries) + JSON (banks); returns its sequence number.

        The reindex job reads snapshots; loading starts from the newest one. `banks.json` is
        written last, so a snapshot without it is incomplete and ignored.
        """
        with self._lock:
            seq = self.refresh()
            folder = f"{SNAPSHOT_PREFIX}/{seq:012d}"
            if self.store.exists(f"{folder}/banks.json"):
                return seq
            tables = [e.table().add_column(1, "bank", pa.repeat(pa.scalar(name, pa.string()), len(e))) for name, e in self.entries.items()]
            table = pa.concat_tables(tables) if tables else ENTRY_SCHEMA.empty_table()
            self.store.put(f"{folder}/entries.parquet", _parquet(table))
            self.store.put_json_if_absent(f"{folder}/banks.json", {"seq": seq, "banks": list(self.banks.values())})
            return seq

    def _load_snapshot(self) -> None:
        complete = [k for k in self.store.list(SNAPSHOT_PREFIX) if k.endswith("/banks.json")]
        if not complete:
            return
        folder = complete[-1].rsplit("/", 1)[0]
        head = self.store.get_json(f"{folder}/banks.json")
        self.banks = {b["name"]: b for b in head["banks"]}
        self.entries = {name: BankEntries(name) for name in self.banks}
        table = pq.read_table(self.store.path(f"{folder}/entries.parquet"), filesystem=self.store.fs)
        for name, entries in self.entries.items():
            entries.add_segment(table.filter(pc.equal(table.column("bank"), name)).drop_columns(["bank"]))
        self.seq = head["seq"]


def media_key(digest: str) -> str:
    return f"media/{digest[:2]}/{digest}"


def snapshot_folder(seq: int) -> str:
    return f"{SNAPSHOT_PREFIX}/{seq:012d}"


# A batch file (a large add_entries commit) holds one string column per signal type, named
# SIGNAL_COLUMN + type (the value, or its JSON where it is not a string), so a searcher reads
# the ids and its own signal's column and never builds a Python object per entry.
BATCH_FIELDS = [f for f in ENTRY_SCHEMA.names if f not in ("signals", "bank")]


def _batch_table(records: list[dict[str, Any]]) -> pa.Table:
    names = list(dict.fromkeys(n for r in records for n in r["signals"]))
    columns: dict[str, pa.Array] = {f: pa.array([r.get(f) for r in records], ENTRY_SCHEMA.field(f).type) for f in BATCH_FIELDS if f != "metadata"}
    columns["metadata"] = pa.array([json.dumps(r["metadata"]) if r.get("metadata") else None for r in records], pa.string())
    for name in names:
        values = [r["signals"].get(name) for r in records]
        columns[SIGNAL_COLUMN + name] = pa.array([v if v is None or isinstance(v, str) else json.dumps(v) for v in values], pa.string())
    return pa.table(columns)


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _read_batch(store: ObjectStore, key: str, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(store.path(key), filesystem=store.fs, columns=columns)


def _json_types() -> set[str]:
    """The signal types whose batch-file column holds JSON (float vectors), not the value itself."""
    from .signals import SIGNAL_TYPES

    return {n for n, t in SIGNAL_TYPES.items() if t.index_kind == "float" and not t.bag}


def batch_signal(store: ObjectStore, record: dict[str, Any], name: str) -> tuple[list[str], list[Any], list[bool]]:
    """(entry ids, values, enabled) of the entries of an add_entries record that have signal `name`."""
    if "entries_file" not in record:
        mine = [e for e in record["entries"] if e["signals"].get(name) is not None]
        return [e["entry_id"] for e in mine], [e["signals"][name] for e in mine], [e.get("enabled", True) for e in mine]
    key, column = record["entries_file"], SIGNAL_COLUMN + name
    if column not in pq.read_schema(store.path(key), filesystem=store.fs).names:
        return [], [], []
    table = _read_batch(store, key, ["entry_id", "enabled", column])
    table = table.filter(pc.is_valid(table.column(column)))
    values = table.column(column).to_pylist()
    if name in _json_types():
        values = [json.loads(v) for v in values]
    return table.column("entry_id").to_pylist(), values, table.column("enabled").to_pylist()


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    return errors()[0]["msg"] if callable(errors) else str(exc)
