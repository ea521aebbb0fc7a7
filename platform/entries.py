"""One bank's entries as a reader of the catalog holds them: columnar, not a Python object each.

An ingress answers every match with the labels and metadata of the entries hit, so it holds
the catalog; at a million entries, a dict per entry cost gigabytes in every replica. Here the
entries live in Arrow segments (the catalog snapshot's rows of the bank, each large batch
file of the log as read) with a sorted array of their ids to find a row, plus a small overlay
of dicts: entries added by small commits (folded into a segment when there are enough of
them), entries changed since their segment (the overlay's copy wins) and tombstones.
"""

from __future__ import annotations

import ctypes
import heapq
import json
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ENTRY_SCHEMA = pa.schema(
    [
        ("entry_id", pa.string()),
        ("bank", pa.string()),
        ("content_type", pa.string()),
        ("signals", pa.string()),  # JSON: {signal_type: value}
        ("metadata", pa.string()),  # JSON (a batch file's segment: null for {})
        ("enabled", pa.bool_()),
        ("created_at", pa.string()),
        ("media", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("external_id", pa.string()),
    ]
)
SEGMENT_SCHEMA = pa.schema([f for f in ENTRY_SCHEMA if f.name != "bank"])  # a segment is one bank's
SIGNAL_COLUMN = "signal:"  # a batch file's column of one signal type's values
FOLD_AT = 4096  # overlay additions folded into a segment
CHUNK = 4096  # the most rows decoded at a time when iterating


def segment_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Entry dicts (`Entry.model_dump()` form) as a segment."""
    columns = {f.name: [r.get(f.name) for r in rows] for f in SEGMENT_SCHEMA}
    columns["signals"] = [json.dumps(s) for s in columns["signals"]]
    columns["metadata"] = [json.dumps(m) if m else None for m in columns["metadata"]]
    columns["labels"] = [labels or [] for labels in columns["labels"]]
    return pa.table(columns, schema=SEGMENT_SCHEMA)


def batch_segment(batch: pa.Table, json_types: set[str]) -> pa.Table:
    """A batch file's table (one column per signal type, see catalog) as a segment: its signal
    columns joined into the signals JSON. `json_types`: the types whose column holds JSON.
    Built with Arrow's string kernels: a million entries make no Python object each."""
    names = [c[len(SIGNAL_COLUMN):] for c in batch.column_names if c.startswith(SIGNAL_COLUMN)]
    pieces = [_json_member(n, batch.column(SIGNAL_COLUMN + n), n in json_types) for n in names]
    if pieces:
        members = pc.binary_join_element_wise(*pieces, ", ", null_handling="skip")
        signals = pc.binary_join_element_wise("{", pc.if_else(pc.is_valid(members), members, ""), "}", "")
    else:
        signals = pa.array(["{}"] * len(batch), pa.string())
    return pa.table({f.name: signals if f.name == "signals" else batch.column(f.name).cast(f.type) for f in SEGMENT_SCHEMA},
                    schema=SEGMENT_SCHEMA)


def _json_member(name: str, values: pa.ChunkedArray, is_json: bool) -> pa.ChunkedArray:
    """`"name": value` as JSON for each non-null value (null where the value is)."""
    if not is_json:
        if pc.any(pc.match_substring_regex(values, r'["\\\x00-\x1f]')).as_py():  # needs escaping: rare, slow path
            values = pa.chunked_array([pa.array([None if v is None else json.dumps(v)[1:-1] for v in values.to_pylist()], pa.string())])
        values = pc.binary_join_element_wise('"', values, '"', "")
    return pc.binary_join_element_wise(json.dumps(name) + ": ", values, "")


def release_unused_memory() -> None:
    """Give back to the system what Arrow's allocator and glibc's malloc keep from a large load's
    or build's temporaries (Parquet reads, string joins, faiss's buffers): at 1M catalog entries,
    ~140 MiB of a replica's RSS. After loads and builds, not per request."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def id_array(ids) -> np.ndarray:
    """Entry ids (a list, numpy or Arrow array of str) as fixed-width UTF-8 bytes (numpy 'S',
    padded with NULs that numpy strips), converted in Arrow: no Python object per id."""
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "S":
        return ids
    raw = string_array(ids).cast(pa.binary())
    lengths = pc.binary_length(raw)
    width = max(1, pc.max(lengths).as_py() or 0)
    padding = pc.binary_repeat(pa.scalar(b"\0"), pc.subtract(pa.scalar(width, lengths.type), lengths))
    fixed = pc.binary_join_element_wise(raw, padding, b"").cast(pa.binary(width))
    return np.frombuffer(fixed.buffers()[1], dtype=f"S{width}", count=len(fixed), offset=fixed.offset * width) if len(fixed) else np.zeros(0, f"S{width}")


def string_array(values) -> pa.Array:
    """A list, numpy or (chunked) Arrow array of str as one Arrow array."""
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values if isinstance(values, pa.Array) else pa.array(list(values), pa.string())


def entry_of(row: dict[str, Any], bank: str) -> dict[str, Any]:
    """A segment's row (`to_pylist()`) as an entry dict."""
    row["bank"] = bank
    if "signals" in row:
        row["signals"] = json.loads(row["signals"])
    row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else {}
    row["labels"] = row["labels"] or []
    return row


def _entry_id(entry: dict[str, Any]) -> str:
    return entry["entry_id"]


class Segment:
    """An immutable table of entries (chunked: merging two is zero-copy) and its ids, sorted,
    to find a row by id."""

    def __init__(self, table: pa.Table, ids: np.ndarray | None = None):
        """`ids`: the table's ids in its row order, as bytes (computed when not given)."""
        self.table = table
        self.columns = list(zip(table.column_names, table.columns))
        if ids is None:
            ids = id_array(table.column("entry_id"))
        # ids are time-ordered, so one writer's batches arrive sorted and a merge is a concatenation
        self.order = None if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])) else np.argsort(ids, kind="stable")
        self.ids = ids if self.order is None else ids[self.order]
        self.disabled = len(table) - int(pc.sum(table.column("enabled").cast(pa.int64())).as_py() or 0)

    def merged(self, newer: "Segment") -> "Segment":
        return Segment(pa.concat_tables([self.table, newer.table]), np.concatenate([self.table_ids(), newer.table_ids()]))

    def table_ids(self) -> np.ndarray:
        if self.order is None:
            return self.ids
        ids = np.empty_like(self.ids)
        ids[self.order] = self.ids
        return ids

    def __len__(self) -> int:
        return len(self.table)

    def row(self, i: int, signals: bool = True) -> dict[str, Any]:
        """Row i, undecoded (a scalar per column: a fifth of a one-row slice's `to_pylist`)."""
        return {name: column[i].as_py() for name, column in self.columns if signals or name != "signals"}

    def row_of(self, entry_id: str) -> int | None:
        key = entry_id.encode()
        i = int(np.searchsorted(self.ids, key))
        if i < len(self.ids) and self.ids[i] == key:
            return i if self.order is None else int(self.order[i])
        return None

    def in_order(self, after: str | None) -> Iterator[dict[str, Any]]:
        """Undecoded rows in id order, from the first id after `after`."""
        at = int(np.searchsorted(self.ids, after.encode(), side="right")) if after is not None else 0
        size = 64  # a page needs few rows, an export all: chunks grow
        while at < len(self.ids):
            if self.order is None:
                yield from self.table.slice(at, size).to_pylist()
            else:
                yield from self.table.take(pa.array(self.order[at : at + size], pa.int64())).to_pylist()
            at, size = at + size, min(2 * size, CHUNK)


class BankEntries:
    """The entries of one bank: by id (`get`, `[]`, `in`), `len`, `iter_entries` in id order, and the catalog's
    changes (`add_rows`, `add_segment`, `update`, `delete`). Readers need no lock: a change
    replaces the overlay or the segment list whole (copy on write), never edits one in place."""

    def __init__(self, bank: str):
        self.bank = bank
        self.segments: list[Segment] = []
        self.overlay: dict[str, dict[str, Any] | None] = {}  # entry id -> entry, or None: deleted
        self.added: set[str] = set()  # overlay ids in no segment (folded at FOLD_AT)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def __contains__(self, entry_id: str) -> bool:
        return self.get(entry_id) is not None

    def __getitem__(self, entry_id: str) -> dict[str, Any]:
        entry = self.get(entry_id)
        if entry is None:
            raise KeyError(entry_id)
        return entry

    def get(self, entry_id: str, default: Any = None, signals: bool = True) -> dict[str, Any] | None:
        """The entry, or `default`; `signals=False`: a stored entry comes without its signals (a
        match answer needs its labels and metadata, not its keypoints' 14 KB of JSON decoded)."""
        if entry_id in self.overlay:
            entry = self.overlay[entry_id]
            return default if entry is None else entry
        for segment in reversed(self.segments):
            row = segment.row_of(entry_id)
            if row is not None:
                return entry_of(segment.row(row, signals), self.bank)
        return default

    # -- changes (the catalog's, under its lock) ---------------------------------------------------
    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        self.overlay = {**self.overlay, **{row["entry_id"]: row for row in rows}}
        self.added.update(row["entry_id"] for row in rows)
        self.count += len(rows)
        if len(self.added) >= FOLD_AT:
            self._fold()

    def add_segment(self, table: pa.Table) -> None:
        self.count += len(table)
        self._append(Segment(table))

    def update(self, entry_id: str, changes: dict[str, Any]) -> None:
        self.overlay = {**self.overlay, entry_id: {**self.get(entry_id), **changes}}

    def delete(self, entry_id: str) -> None:
        if self.get(entry_id) is not None:
            self.overlay = {**self.overlay, entry_id: None}
            self.count -= 1

    def _fold(self) -> None:
        """The overlay's additions, as a segment."""
        rows = [self.overlay[i] for i in sorted(self.added) if self.overlay[i] is not None]
        self._append(Segment(segment_table(rows)))
        self.overlay = {i: e for i, e in self.overlay.items() if i not in self.added}
        self.added = set()

    def _append(self, segment: Segment) -> None:
        """Add a segment, merging the newest ones while the older is under twice the newer's
        size, so a bank banked entry by entry ends with a few segments, not thousands."""
        segments = [*self.segments, segment]
        while len(segments) > 1 and len(segments[-2]) <= 2 * len(segments[-1]):
            newer = segments.pop()
            segments[-1] = segments[-1].merged(newer)
        self.segments = segments

    # -- reading everything --------------------------------------------------------------------------
    def iter_entries(self, after: str | None = None) -> Iterator[dict[str, Any]]:
        """Every entry in id order, from the first id after `after`."""
        overlay = self.overlay
        stored = heapq.merge(*(segment.in_order(after) for segment in self.segments), key=_entry_id)
        stored = (entry_of(row, self.bank) for row in stored if row["entry_id"] not in overlay)
        changed = sorted((e for i, e in overlay.items() if e is not None and (after is None or i > after)), key=_entry_id)
        yield from heapq.merge(stored, changed, key=_entry_id)

    def disabled_count(self) -> int:
        overlay = self.overlay
        changed = [e for e in overlay.values() if e is not None]
        overridden = 0
        for entry_id in overlay:
            for segment in self.segments:
                row = segment.row_of(entry_id)
                if row is not None and not segment.table.column("enabled")[row].as_py():
                    overridden += 1
        return sum(s.disabled for s in self.segments) - overridden + sum(not e.get("enabled", True) for e in changed)

    def table(self) -> pa.Table:
        """Every entry as one segment table (for a snapshot)."""
        overlay = self.overlay
        changed = pa.array(list(overlay), pa.string())
        parts = [s.table.filter(pc.invert(pc.is_in(s.table.column("entry_id"), value_set=changed))) for s in self.segments]
        parts.append(segment_table([e for e in overlay.values() if e is not None]))
        return pa.concat_tables(parts)
