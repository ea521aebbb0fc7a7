"""Hash-list exchange: import the lists partners share into a bank, export a bank to re-import.

Formats (`FORMATS`): CSV with a header, JSON Lines and Parquet, one row per signal:

    signal_type,signal[,content_type][,labels][,metadata][,external_id]

`signal_type` is ours or a name ThreatExchange / HMA use (`ALIASES`: `pdq`, `video_md5`,
`HASH_PDQ`, `raw_text`, ...); `labels` is `;`-separated in CSV (a list in JSON Lines and
Parquet); `metadata` a JSON object. Consecutive rows with the same `external_id` are one
entry's signals (an export writes a multi-signal entry that way).

Every row is checked with its signal type's own parser before anything is committed; a bad
row is reported with its line (or row) number and the reason and is never banked (nor is the
rest of its entry). Good entries are committed in batches, one catalog commit each, so each
batch lands whole or not at all. Entries the bank already holds (same `external_id`, or, for
rows without one, the same signal value) are skipped, so an interrupted import can be run
again and adds only what is missing.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import json
import re
import secrets
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, Iterator, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from .catalog import Catalog, new_entry_id, now_iso
from .errors import InvalidInput, NotFound
from .media import CONTENT_TYPES
from .progress import recording_progress
from .signals import SIGNAL_TYPES, compute_signals, signal_types_for
from .storage import ObjectStore

FORMATS = ("csv", "jsonl", "parquet")
COLUMNS = ("signal_type", "signal", "content_type", "labels", "metadata", "external_id")
REQUIRED = ("signal_type", "signal")
LABEL = re.compile(r"^[\w.:/-]{1,64}$")
MAX_LABELS = 32
MAX_EXTERNAL_ID = 256
MAX_BAD_LISTED = 10_000  # bad rows listed in a report (all are counted)
TEXT = "text"  # an alias whose signal is the text itself: its text signals are computed

# ThreatExchange / HMA names -> (our signal type, the content type it implies). HMA names its
# signal types after its classes (PdqSignal -> pdq, VideoMD5Signal -> video_md5, RawTextSignal
# -> raw_text); ThreatExchange's indicator types are HASH_PDQ, HASH_MD5, HASH_VIDEO_MD5, ...
ALIASES: dict[str, tuple[str, str | None]] = {
    "hash_pdq": ("pdq", "photo"),
    "photo_md5": ("md5", "photo"),
    "hash_photo_md5": ("md5", "photo"),
    "video_md5": ("md5", "video"),
    "hash_video_md5": ("md5", "video"),
    "hash_md5": ("md5", None),
    "hash_vpdq": ("vpdq", "video"),
    "raw_text": (TEXT, "text"),
    "text_string": (TEXT, "text"),
}


def resolve_signal_type(name: str) -> tuple[str, str | None]:
    """(our signal type or TEXT, the content type the name implies) for ours or an alias."""
    key = name.strip().lower()
    if key in SIGNAL_TYPES:
        types = SIGNAL_TYPES[key].content_types
        return key, next(iter(types)) if len(types) == 1 else None
    if key in ALIASES:
        return ALIASES[key]
    raise InvalidInput(f"unknown signal type {name.strip()[:64]!r}; known: {', '.join([*SIGNAL_TYPES, *ALIASES])}")


def hma_vpdq(value: str) -> str:
    """HMA's vPDQ serialisation (a JSON list of "pdqhex,quality,seconds") in ours ("pdqhex:quality:seconds,...")."""
    try:
        frames = json.loads(value)
        return ",".join(":".join(p.strip() for p in frame.split(",")) for frame in frames)
    except (ValueError, AttributeError, TypeError):
        raise InvalidInput("vpdq given as a JSON list must hold 'pdqhex,quality,seconds' strings") from None


# -- reports -----------------------------------------------------------------------------------
class BadRow(BaseModel):
    line: int = Field(description="line of the file (CSV: the header is line 1; Parquet: row number, from 1)")
    reason: str


class ImportReport(BaseModel):
    bank: str
    format: str
    rows: int = Field(0, description="data rows read")
    added: int = Field(0, description="entries committed")
    already_banked: int = Field(0, description="entries the bank held already (skipped)")
    bad_count: int = 0
    bad: list[BadRow] = Field(default_factory=list, description=f"the first {MAX_BAD_LISTED} bad rows")
    batches: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        bad = f"{self.bad_count} bad rows not banked; " if self.bad_count else ""
        skipped = f", {self.already_banked} already banked" if self.already_banked else ""
        return f"{bad}{self.added} entries added to {self.bank}{skipped} ({self.rows} rows, {self.batches} commits, {self.seconds:.1f}s)"


Progress = Callable[[float, str], None]


# -- reading rows ------------------------------------------------------------------------------
class CountingReader(io.RawIOBase):
    """A binary stream that counts what has been read through it (progress by bytes)."""

    def __init__(self, stream: IO[bytes]):
        self.stream, self.count = stream, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


def detect_format(name: str | None, head: bytes) -> str:
    """From the file name's suffix, else from the first bytes."""
    lowered = (name or "").lower().removesuffix(".gz")
    for suffix, fmt in ((".csv", "csv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"), (".parquet", "parquet")):
        if lowered.endswith(suffix):
            return fmt
    if head.startswith(b"PAR1"):
        return "parquet"
    return "jsonl" if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") else "csv"


def read_rows(stream: IO[bytes], fmt: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line, fields) per data row, or (line, reason) for a row that cannot be read at all."""
    if fmt == "csv":
        yield from _csv_rows(stream)
    elif fmt == "jsonl":
        yield from _jsonl_rows(stream)
    elif fmt == "parquet":
        yield from _parquet_rows(stream)
    else:
        raise InvalidInput(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def _csv_rows(stream: IO[bytes]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="strict", newline="")
    reader = csv.reader(text)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise InvalidInput("the file is empty: a CSV import needs a header line (signal_type,signal,...)") from None
    except UnicodeDecodeError:
        raise InvalidInput("line 1: not UTF-8 text") from None
    _check_header(header)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            raise InvalidInput(f"line {reader.line_num + 1}: not UTF-8 text; the rows before it were read") from None
        except csv.Error as exc:
            yield reader.line_num, f"not readable as CSV: {exc}"
            continue
        if not cells or cells == [""]:
            continue
        if len(cells) != len(header):
            yield reader.line_num, f"{len(cells)} fields where the header has {len(header)} ({','.join(header)})"
            continue
        yield reader.line_num, {h: c for h, c in zip(header, cells) if c != ""}


def _check_header(header: list[str]) -> None:
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise InvalidInput(f"line 1: unknown column {unknown[0]!r}; the columns are {', '.join(COLUMNS)}")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InvalidInput(f"line 1: the header has no {missing[0]!r} column (it needs {', '.join(REQUIRED)})")
    if len(set(header)) != len(header):
        raise InvalidInput("line 1: a column is named twice in the header")


def _jsonl_rows(stream: IO[bytes]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for line, raw in enumerate(stream, 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            yield line, f"not a JSON object: {exc}"
            continue
        if not isinstance(value, dict):
            yield line, f"a JSON object per line, not {type(value).__name__}"
            continue
        unknown = [k for k in value if k not in COLUMNS]
        if unknown:
            yield line, f"unknown field {unknown[0]!r}; the fields are {', '.join(COLUMNS)}"
            continue
        yield line, {k: v for k, v in value.items() if v is not None and v != ""}


def _parquet_rows(stream: IO[bytes]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    try:
        parquet = pq.ParquetFile(stream)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"not a Parquet file: {exc}") from None
    _check_header(list(parquet.schema_arrow.names))
    row = 0
    for batch in parquet.iter_batches(batch_size=65536):
        for fields in batch.to_pylist():
            row += 1
            yield row, {k: v for k, v in fields.items() if v is not None and v != ""}


# -- checking rows -----------------------------------------------------------------------------
@dataclass
class Pending:
    """An entry being read: consecutive rows with one external_id."""

    line: int
    external_id: str | None
    content_type: str
    signals: dict[str, Any]
    labels: list[str]
    metadata: dict[str, Any]
    lines: list[int] = field(default_factory=list)  # its rows not reported bad (yet)
    bad: bool = False


def check_row(fields: dict[str, Any]) -> tuple[str | None, str, dict[str, Any], list[str], dict[str, Any]]:
    """(external_id, content_type, signals, labels, metadata) of a row; InvalidInput says what is wrong."""
    if "signal_type" not in fields:
        raise InvalidInput("no signal_type")
    name, implied = resolve_signal_type(str(fields["signal_type"]))
    value = fields.get("signal")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidInput("the signal is empty")
    content_type = fields.get("content_type") or implied
    if content_type is None:
        choices = sorted(SIGNAL_TYPES[name].content_types)
        raise InvalidInput(f"{name} describes {' or '.join(choices)}: give a content_type column")
    if content_type not in CONTENT_TYPES or content_type == "post":
        raise InvalidInput(f"content_type {str(content_type)[:32]!r} is not one of {', '.join(c for c in CONTENT_TYPES if c != 'post')}")
    if implied and content_type != implied:
        raise InvalidInput(f"{fields['signal_type']} describes {implied}, not {content_type}")
    if name == TEXT:
        signals = _text_signals(value)
    else:
        signal_type = SIGNAL_TYPES[name]
        if content_type not in signal_type.content_types:
            raise InvalidInput(f"{name} does not describe content of type {content_type!r}")
        signals = {name: signal_type.parse(_cell_value(name, value))}
    return _external_id(fields.get("external_id")), content_type, signals, _labels(fields.get("labels")), _metadata(fields.get("metadata"))


def _cell_value(name: str, value: Any) -> Any:
    """A CSV cell is a string: float vectors come as JSON lists, HMA's vPDQ as its JSON form."""
    if isinstance(value, str):
        stripped = value.strip()
        if SIGNAL_TYPES[name].index_kind == "float" and not SIGNAL_TYPES[name].bag:
            try:
                return json.loads(stripped)
            except ValueError:
                raise InvalidInput(f"{name} must be a JSON list of numbers") from None
        if name == "vpdq" and stripped.startswith("["):
            return hma_vpdq(stripped)
        return stripped
    return value


def _text_signals(value: Any) -> dict[str, Any]:
    if not isinstance(value, str):
        raise InvalidInput("a raw_text signal is the text itself")
    signals = compute_signals(value, "text", signal_types_for("text", include_models=False))
    values = {n: s.value for n, s in signals.items() if s.value is not None}
    if not values:
        raise InvalidInput("no text signal can be computed from this text: " + "; ".join(s.reason or "" for s in signals.values()))
    return values


def _external_id(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if len(text) > MAX_EXTERNAL_ID or not text.isprintable():
        raise InvalidInput(f"external_id must be at most {MAX_EXTERNAL_ID} printable characters")
    return text


def _raw_external_id(fields: dict[str, Any]) -> str | None:
    try:
        return _external_id(fields.get("external_id"))
    except InvalidInput:
        return None


def _labels(value: Any) -> list[str]:
    if value is None:
        return []
    labels = value.split(";") if isinstance(value, str) else value
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise InvalidInput("labels must be ';'-separated text or a list of strings")
    labels = [label.strip() for label in labels]
    for label in labels:
        if not LABEL.match(label):
            raise InvalidInput(f"label {label[:64]!r} is not 1-64 characters of letters, digits, '_', '.', ':', '/' and '-'")
    if len(labels) > MAX_LABELS:
        raise InvalidInput(f"{len(labels)} labels, over the limit of {MAX_LABELS}")
    return list(dict.fromkeys(labels))


def _metadata(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidInput(f"metadata is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput("metadata must be a JSON object")
    return value


# -- importing ---------------------------------------------------------------------------------
class Importer:
    """One import into one bank: rows in, entries committed in batches, a report out."""

    def __init__(self, catalog: Catalog, bank: str, fmt: str, batch_size: int = 50_000,
                 on_bad: Callable[[BadRow], None] | None = None):
        self.catalog, self.bank, self.batch_size, self.on_bad = catalog, bank, batch_size, on_bad
        self.report = ImportReport(bank=bank, format=fmt)
        catalog.get_bank(bank)  # an unknown bank fails before any work
        self.known_ids: dict[str, None] = {}  # banked before: value None
        self.known_values: dict[tuple[str, str], None] = {}
        for e in catalog.entries[bank].iter_entries():
            if e.get("external_id"):
                self.known_ids[e["external_id"]] = None
            self.known_values.update(((n, v if isinstance(v, str) else json.dumps(v)), None) for n, v in e["signals"].items())
        self.batch: list[dict[str, Any]] = []

    def run(self, rows: Iterable[tuple[int, dict[str, Any] | str]], progress: Progress | None = None, total: Callable[[], float] | None = None) -> ImportReport:
        started, last = time.monotonic(), 0.0
        pending: Pending | None = None
        for line, fields in rows:
            self.report.rows += 1
            if isinstance(fields, str):
                self.bad(line, fields)
                continue
            try:
                external_id, content_type, signals, labels, metadata = check_row(fields)
            except InvalidInput as exc:
                self.bad(line, str(exc))
                bad_id = _raw_external_id(fields)
                if bad_id is not None:  # the rest of its entry must not be banked either
                    if pending is None or pending.external_id != bad_id:
                        if pending is not None:
                            self.finish(pending)
                        pending = Pending(line, bad_id, "", {}, [], {}, [])
                    pending.bad = True
                continue
            if pending is not None and external_id is not None and external_id == pending.external_id:
                self.merge(pending, line, content_type, signals, labels, metadata)
                continue
            if pending is not None:
                self.finish(pending)
            pending = Pending(line, external_id, content_type, signals, labels, metadata, [line])
            if progress and time.monotonic() - last > 0.25:
                last = time.monotonic()
                progress(total() if total else 0.0, f"{self.report.rows} rows")
        if pending is not None:
            self.finish(pending)
        self.commit()
        self.report.bad.sort(key=lambda row: row.line)
        self.report.seconds = round(time.monotonic() - started, 3)
        if progress:
            progress(1.0, f"{self.report.rows} rows")
        return self.report

    def bad(self, line: int, reason: str) -> None:
        row = BadRow(line=line, reason=reason)
        self.report.bad_count += 1
        if len(self.report.bad) < MAX_BAD_LISTED:
            self.report.bad.append(row)
        if self.on_bad:
            self.on_bad(row)

    def merge(self, pending: Pending, line: int, content_type: str, signals: dict, labels: list, metadata: dict) -> None:
        """Another signal of the entry being read (the row after it with the same external_id)."""
        if pending.bad:
            pending.lines.append(line)
        elif content_type != pending.content_type or labels != pending.labels or metadata != pending.metadata:
            self.bad(line, f"content_type, labels or metadata differ from line {pending.line}, an earlier row of external_id {pending.external_id!r}")
            pending.bad = True
        elif set(signals) & set(pending.signals):
            self.bad(line, f"a second {next(iter(set(signals) & set(pending.signals)))} for external_id {pending.external_id!r} (line {pending.line})")
            pending.bad = True
        else:
            pending.signals.update(signals)
            pending.lines.append(line)

    def finish(self, pending: Pending) -> None:
        """Bank a read entry (next batch), skip it if banked already, or report why not."""
        if pending.bad:
            for line in pending.lines:
                self.bad(line, f"not banked: another row of external_id {pending.external_id!r} is bad")
            return
        values = [(n, v if isinstance(v, str) else json.dumps(v)) for n, v in pending.signals.items()]
        if pending.external_id is not None:
            seen = self.known_ids.get(pending.external_id, 0)
            if seen is None:
                self.report.already_banked += 1
                return
            if seen:
                return self.bad(pending.line, f"duplicate external_id {pending.external_id!r} (line {seen})")
            self.known_ids[pending.external_id] = pending.line
        else:
            for key in values:
                seen = self.known_values.get(key, 0)
                if seen is None:
                    self.report.already_banked += 1
                    return
                if seen:
                    return self.bad(pending.line, f"duplicate {key[0]} value (line {seen})")
        for key in values:
            self.known_values.setdefault(key, pending.line)
        self.batch.append({"entry_id": new_entry_id(), "content_type": pending.content_type, "signals": pending.signals,
                           "metadata": pending.metadata, "labels": pending.labels, "external_id": pending.external_id})
        if len(self.batch) >= self.batch_size:
            self.commit()

    def commit(self) -> None:
        if not self.batch:
            return
        at = now_iso()
        self.catalog.add_entry_records(self.bank, [{**e, "bank": self.bank, "enabled": True, "created_at": at, "media": None} for e in self.batch])
        self.report.added += len(self.batch)
        self.report.batches += 1
        self.batch = []


@contextlib.contextmanager
def open_source(settings, source: str) -> Iterator[tuple[IO[bytes], int | None]]:
    """A local file or an s3://bucket/key object (the settings' S3 endpoint) as a seekable
    binary stream, and its size."""
    if source.startswith("s3://"):
        bucket, _, key = source[len("s3://"):].partition("/")
        if not key:
            raise InvalidInput(f"{source}: name an object, s3://bucket/key")
        store = ObjectStore(f"s3://{bucket}", endpoint=settings.s3_endpoint, region=settings.s3_region)
        try:
            size = store.fs.get_file_info(store.path(key)).size
            stream = store.fs.open_input_file(store.path(key))
        except FileNotFoundError:
            raise InvalidInput(f"{source}: no such object") from None
    else:
        size, stream = os.path.getsize(source), open(source, "rb")
    with stream:
        yield stream, size


def import_stream(catalog: Catalog, bank: str, stream: IO[bytes], fmt: str | None = None, name: str | None = None,
                  size: int | None = None, batch_size: int = 50_000, progress: Progress | None = None,
                  on_bad: Callable[[BadRow], None] | None = None) -> ImportReport:
    """Import a file (a binary stream; Parquet needs a seekable one) into a bank."""
    if fmt is None:
        head = stream.peek(8)[:8] if hasattr(stream, "peek") else b""
        if not head and stream.seekable():
            head = stream.read(8)
            stream.seek(0)
        fmt = detect_format(name, head)
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    importer = Importer(catalog, bank, fmt, batch_size, on_bad)
    if fmt == "parquet":
        rows = read_rows(stream, fmt)
        total = None
    else:
        counted = CountingReader(stream)
        rows = read_rows(io.BufferedReader(counted, 1 << 20), fmt)
        total = (lambda: min(0.99, counted.count / size)) if size else None
    return importer.run(rows, progress, total)


# -- import jobs (over HTTP) ----------------------------------------------------------------------
IMPORT_JOBS_PREFIX = "jobs/import"
STALE_SECONDS = 120  # a running job not updated for this long lost its replica


class ImportJob(BaseModel):
    """An import started over HTTP; the shape of a reindex job's status, with the report."""

    job_id: str
    bank: str
    state: Literal["pending", "running", "succeeded", "failed"] = "pending"
    progress: float = 0.0
    message: str = ""
    report: ImportReport | None = None
    error: str | None = None
    created_at: str = Field(default_factory=now_iso)
    updated_at: str = Field(default_factory=now_iso)
    finished_at: str | None = None


def new_import_job(bank: str) -> ImportJob:
    return ImportJob(job_id=f"i_{int(time.time())}_{secrets.token_hex(4)}", bank=bank)


def write_job(store: ObjectStore, job: ImportJob) -> None:
    job.updated_at = now_iso()
    store.put_json(f"{IMPORT_JOBS_PREFIX}/{job.job_id}.json", job.model_dump())


def read_job(store: ObjectStore, bank: str, job_id: str) -> ImportJob:
    if not re.fullmatch(r"i_\d+_[0-9a-f]{8}", job_id):
        raise NotFound(f"no import job {job_id!r}")
    try:
        job = ImportJob(**store.get_json(f"{IMPORT_JOBS_PREFIX}/{job_id}.json"))
    except FileNotFoundError:
        raise NotFound(f"no import job {job_id!r}") from None
    if job.bank != bank:
        raise NotFound(f"no import job {job_id!r} for bank {bank!r}")
    age = datetime.now(timezone.utc) - datetime.fromisoformat(job.updated_at)
    if job.state in ("pending", "running") and age.total_seconds() > STALE_SECONDS:
        job = job.model_copy(update={"state": "failed", "error": f"the replica running it stopped {int(age.total_seconds())} s ago; "
                                     "run the import again: what was committed is skipped"})
    return job


def run_import_job(store: ObjectStore, catalog: Catalog, job: ImportJob, stream: IO[bytes], fmt: str | None, name: str | None, size: int | None) -> ImportJob:
    """Run an import, recording its progress (at most twice a second) and its report in the store."""
    progress = recording_progress(job, lambda: write_job(store, job))
    job.state = "running"
    write_job(store, job)
    try:
        job.report = import_stream(catalog, job.bank, stream, fmt, name=name, size=size, progress=progress)
        job.state, job.progress, job.message = "succeeded", 1.0, job.report.summary()
    except Exception as exc:  # recorded for the caller; the committed batches stay, whole
        job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
    job.finished_at = now_iso()
    write_job(store, job)
    return job


# -- exporting ---------------------------------------------------------------------------------
def export_rows(catalog: Catalog, bank: str) -> Iterator[dict[str, Any]]:
    """One row per signal of every enabled entry, in entry order. An entry without an
    external_id is exported with its entry_id as one, so its rows stay one entry and a re-import
    of the file is idempotent."""
    catalog.get_bank(bank)
    for entry in catalog.entries[bank].iter_entries():
        if not entry.get("enabled", True):
            continue
        for name, value in entry["signals"].items():
            yield {"signal_type": name, "signal": value, "content_type": entry["content_type"], "labels": entry.get("labels") or [],
                   "metadata": entry.get("metadata") or {}, "external_id": entry.get("external_id") or entry["entry_id"]}


EXPORT_MEDIA_TYPES = {"csv": "text/csv", "jsonl": "application/x-ndjson", "parquet": "application/vnd.apache.parquet"}
PARQUET_SCHEMA = pa.schema([(c, pa.list_(pa.string()) if c == "labels" else pa.string()) for c in COLUMNS])


def export_chunks(catalog: Catalog, bank: str, fmt: str, rows_per_chunk: int = 10_000) -> Iterator[bytes]:
    """The export of a bank as a stream of byte chunks (no full copy in memory)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    rows = export_rows(catalog, bank)
    if fmt == "parquet":
        yield from _parquet_chunks(rows, rows_per_chunk)
        return
    if fmt == "csv":
        yield (",".join(COLUMNS) + "\r\n").encode()
    for chunk in _chunks(rows, rows_per_chunk):
        out = io.StringIO()
        if fmt == "csv":
            writer = csv.writer(out)
            for r in chunk:
                writer.writerow([r["signal_type"], _text(r["signal"]), r["content_type"], ";".join(r["labels"]),
                                 json.dumps(r["metadata"]) if r["metadata"] else "", r["external_id"]])
        else:
            for r in chunk:
                out.write(json.dumps(r, separators=(",", ":")) + "\n")
        yield out.getvalue().encode()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Drain(io.RawIOBase):
    """A write-only sink whose bytes are taken out as they come (Parquet written as a stream)."""

    def __init__(self):
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def _parquet_chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[bytes]:
    sink = _Drain()
    with pq.ParquetWriter(pa.PythonFile(sink, mode="w"), PARQUET_SCHEMA) as writer:
        for chunk in _chunks(rows, size):
            columns = {c: [r[c] for r in chunk] for c in COLUMNS}
            columns["signal"] = [_text(v) for v in columns["signal"]]
            columns["metadata"] = [json.dumps(m) if m else None for m in columns["metadata"]]
            writer.write_table(pa.table(columns, schema=PARQUET_SCHEMA))
            yield sink.take()
    yield sink.take()

