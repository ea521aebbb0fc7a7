"""The Python client of the v1 HTTP API: the documented way to call the service from Python.

    from mediamatch.platform.client import Client

    client = Client("http://127.0.0.1:8000", token="...", retries=3)
    client.create_bank("partner-list", labels=["csam"])
    report = client.import_file("partner-list", "list.csv")       # streamed; waits for the job
    result = client.match_signals({"pdq": "f8f8..."})
    for m in result.matches:
        print(m.bank, m.entry_id, m.distance, m.labels)

Every method answers with the API's own pydantic models (`mediamatch.deployments.models`), or
raises `ApiError` (status, code, message) for an error answer. Requests that are safe to send
twice (reading, hashing, matching) are retried `retries` times on connection errors and on
429/502/503/504, after `Retry-After` when the service sends one, else with exponential backoff;
writes are sent once unless a call passes `retries=`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import requests

from mediamatch.deployments.models import (
    BankOut,
    EntryList,
    EntryOut,
    HashResult,
    MatchResult,
    SignalTypeOut,
)

from .errors import MediamatchError
from .exchange import ImportJob, ImportReport


class ApiError(MediamatchError):
    """An error answer of the service: its status, code and message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{message} (HTTP {status} {code})")
        self.status, self.code = status, code


RETRY_STATUS = (429, 502, 503, 504)
UPLOAD_CHUNK = 1 << 20


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 120, retries: int = 0, backoff: float = 0.25):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        token = token or os.environ.get("MEDIAMATCH_TOKEN")
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.retried = 0  # requests sent again, over this client's life

    # -- the transport ---------------------------------------------------------------------------
    def call(self, method: str, path: str, retries: int | None = None, **kwargs: Any) -> Any:
        """One request; the decoded JSON answer (None when empty)."""
        response = self.send(method, path, retries, **kwargs)
        return response.json() if response.content else None

    def send(self, method: str, path: str, retries: int | None = None, stream: bool = False, **kwargs: Any) -> requests.Response:
        attempts = 1 + (self.retries if retries is None else retries)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self.session.request(method, self.url + path, timeout=self.timeout, stream=stream, **kwargs)
            except requests.ConnectionError as exc:
                if last:
                    raise MediamatchError(f"cannot reach {self.url}: is `mediamatch serve` running? ({type(exc).__name__})") from None
                self._pause(attempt, None)
                continue
            if response.status_code not in RETRY_STATUS or last:
                break
            self._pause(attempt, response.headers.get("Retry-After"))
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "http_error", "message": response.text[:200] or response.reason}
            raise ApiError(response.status_code, error["code"], error["message"])
        return response

    def _pause(self, attempt: int, retry_after: str | None) -> None:
        self.retried += 1
        time.sleep(float(retry_after) if retry_after and retry_after.isdigit() else self.backoff * 2**attempt)

    def upload(self, path: str, file: Path, fields: dict[str, str | None], retries: int | None = None) -> Any:
        with open(file, "rb") as handle:
            data = {k: v for k, v in fields.items() if v is not None}
            return self.call("POST", path, retries, files={"file": (file.name, handle)}, data=data)

    # -- banks -----------------------------------------------------------------------------------
    def create_bank(self, name: str, description: str = "", labels: list[str] | None = None, thresholds: dict[str, float] | None = None) -> BankOut:
        body = {"name": name, "description": description, "labels": labels or [], "thresholds": thresholds or {}}
        return BankOut(**self.call("POST", "/v1/banks", retries=0, json=body))

    def list_banks(self) -> list[BankOut]:
        return [BankOut(**b) for b in self.call("GET", "/v1/banks")["banks"]]

    def get_bank(self, bank: str) -> BankOut:
        return BankOut(**self.call("GET", f"/v1/banks/{bank}"))

    def update_bank(self, bank: str, *, description: str | None = None, labels: list[str] | None = None, enabled: bool | None = None,
                    thresholds: dict[str, float] | None = None) -> BankOut:
        changes = {k: v for k, v in dict(description=description, labels=labels, enabled=enabled, thresholds=thresholds).items() if v is not None}
        return BankOut(**self.call("PATCH", f"/v1/banks/{bank}", json=changes))

    def delete_bank(self, bank: str) -> None:
        self.call("DELETE", f"/v1/banks/{bank}", retries=0)

    # -- entries ---------------------------------------------------------------------------------
    def add_file(self, bank: str, file: Path, content_type: str | None = None, metadata: dict | None = None) -> EntryOut:
        fields = {"content_type": content_type, "metadata": json.dumps(metadata) if metadata else None}
        return EntryOut(**self.upload(f"/v1/banks/{bank}/entries", Path(file), fields, retries=0))

    def add_text(self, bank: str, text: str, metadata: dict | None = None) -> EntryOut:
        return EntryOut(**self.call("POST", f"/v1/banks/{bank}/entries", retries=0, json={"text": text, "metadata": metadata or {}}))

    def add_signals(self, bank: str, signals: dict[str, Any], content_type: str | None = None, metadata: dict | None = None) -> EntryOut:
        body = {"signals": signals, "content_type": content_type, "metadata": metadata or {}}
        return EntryOut(**self.call("POST", f"/v1/banks/{bank}/entries", retries=0, json=body))

    def list_entries(self, bank: str, limit: int = 100, cursor: str | None = None) -> EntryList:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        return EntryList(**self.call("GET", f"/v1/banks/{bank}/entries", params=params))

    def iter_entries(self, bank: str, page: int = 1000) -> Iterator[EntryOut]:
        """Every entry of a bank, a page at a time."""
        cursor = None
        while True:
            listing = self.list_entries(bank, page, cursor)
            yield from listing.entries
            if listing.next_cursor is None:
                return
            cursor = listing.next_cursor

    def get_entry(self, bank: str, entry_id: str) -> EntryOut:
        return EntryOut(**self.call("GET", f"/v1/banks/{bank}/entries/{entry_id}"))

    def update_entry(self, bank: str, entry_id: str, *, enabled: bool | None = None, metadata: dict | None = None) -> EntryOut:
        changes = {k: v for k, v in dict(enabled=enabled, metadata=metadata).items() if v is not None}
        return EntryOut(**self.call("PATCH", f"/v1/banks/{bank}/entries/{entry_id}", json=changes))

    def delete_entry(self, bank: str, entry_id: str) -> None:
        self.call("DELETE", f"/v1/banks/{bank}/entries/{entry_id}", retries=0)

    # -- hashing and matching --------------------------------------------------------------------
    def signal_types(self) -> list[SignalTypeOut]:
        return [SignalTypeOut(**s) for s in self.call("GET", "/v1/signal-types")["signal_types"]]

    def hash_file(self, file: Path, content_type: str | None = None) -> HashResult:
        return HashResult(**self.upload("/v1/hash", Path(file), {"content_type": content_type}))

    def hash_text(self, text: str) -> HashResult:
        return HashResult(**self.call("POST", "/v1/hash", json={"text": text}))

    def match_file(self, file: Path, banks: str | list[str] | None = None, signal_types: str | list[str] | None = None,
                   content_type: str | None = None) -> MatchResult:
        fields = {"banks": _csv(banks), "signal_types": _csv(signal_types), "content_type": content_type}
        return MatchResult(**self.upload("/v1/match", Path(file), fields))

    def match_text(self, text: str, banks: list[str] | None = None, signal_types: list[str] | None = None) -> MatchResult:
        return MatchResult(**self.call("POST", "/v1/match", json={"text": text, "banks": banks, "signal_types": signal_types}))

    def match_signals(self, signals: dict[str, Any], content_type: str | None = None, banks: list[str] | None = None,
                      signal_types: list[str] | None = None) -> MatchResult:
        body = {"signals": signals, "content_type": content_type, "banks": banks, "signal_types": signal_types}
        return MatchResult(**self.call("POST", "/v1/match", json=body))

    def match_post(self, post: dict[str, Any], banks: list[str] | None = None, signal_types: list[str] | None = None) -> MatchResult:
        """A post: `{"text": ..., "parts": [{"signals": {...}} | {"text": ...}]}`, matched part by part."""
        return MatchResult(**self.call("POST", "/v1/match", json={"post": post, "banks": banks, "signal_types": signal_types}))

    # -- index operations (admin) ----------------------------------------------------------------
    def reindex(self, signal_types: list[str] | None = None) -> str:
        """Start a reindex; its job id."""
        return self.call("POST", "/v1/reindex", retries=0, json={"signal_types": signal_types})["job_id"]

    def reindex_status(self, job_id: str):
        from mediamatch.indexing.jobs import JobStatus

        return JobStatus(**self.call("GET", f"/v1/reindex/{job_id}"))

    def wait_reindex(self, job_id: str, timeout: float = 3600, progress: Callable[[float], None] | None = None, poll: float = 0.5):
        """The job's final status (succeeded or failed), polling its progress."""
        return self._wait(lambda: self.reindex_status(job_id), timeout, progress, poll, f"reindex job {job_id}")

    def indexes(self) -> dict[str, dict[str, Any]]:
        """Per signal type: the published version, count, shards, built_at, params, live_delta and the version served."""
        return self.call("GET", "/v1/indexes")

    def rollback(self, signal_type: str, version: str) -> dict[str, Any]:
        return self.call("POST", f"/v1/indexes/{signal_type}/rollback", retries=0, json={"version": version})

    def healthz(self) -> bool:
        return self.call("GET", "/healthz")["status"] == "ok"

    def readyz(self) -> dict[str, Any]:
        return self.call("GET", "/readyz")

    # -- exchange --------------------------------------------------------------------------------
    def start_import(self, bank: str, source: Path | str | IO[bytes], fmt: str | None = None,
                     progress: Callable[[float], None] | None = None) -> str:
        """Stream a hash list (a path or a binary stream) to the service; the import job's id.
        `progress` hears the share of the file sent."""
        opened = not hasattr(source, "read")
        stream = open(source, "rb") if opened else source
        try:
            size = None
            if stream.seekable():
                start = stream.tell()
                size = stream.seek(0, os.SEEK_END) - start
                stream.seek(start)
            name = str(source) if opened else getattr(stream, "name", "")
            params = {"format": fmt} if fmt else {}
            headers = {"Content-Type": _media_type(fmt, name)}
            return self.call("POST", f"/v1/banks/{bank}/import", retries=0, params=params, headers=headers,
                             data=_chunks(stream, size, progress))["job_id"]
        finally:
            if opened:
                stream.close()

    def import_status(self, bank: str, job_id: str) -> ImportJob:
        return ImportJob(**self.call("GET", f"/v1/banks/{bank}/import/{job_id}"))

    def import_file(self, bank: str, source: Path | str | IO[bytes], fmt: str | None = None,
                    progress: Callable[[float], None] | None = None, timeout: float = 3600) -> ImportReport:
        """Import a hash list and wait for its report (bad rows are in `report.bad`); an
        import that failed raises ApiError."""
        job_id = self.start_import(bank, source, fmt, (lambda f: progress(f / 2)) if progress else None)
        job = self._wait(lambda: self.import_status(bank, job_id), timeout, (lambda f: progress(0.5 + f / 2)) if progress else None,
                         0.25, f"import job {job_id}")
        if job.state == "failed":
            raise ApiError(500, "import_failed", f"import job {job_id} failed: {job.error}")
        return job.report

    def export(self, bank: str, fmt: str = "csv") -> Iterator[bytes]:
        """A bank's enabled entries in a form `import_file` reads back, streamed in chunks."""
        response = self.send("GET", f"/v1/banks/{bank}/export", params={"format": fmt}, stream=True)
        with response:
            yield from response.iter_content(UPLOAD_CHUNK)

    def _wait(self, read, timeout: float, progress, poll: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            status = read()
            if progress:
                progress(status.progress)
            if status.state in ("succeeded", "failed"):
                return status
            if time.monotonic() > deadline:
                raise MediamatchError(f"{what} did not finish in {timeout:g} s (state {status.state})")
            time.sleep(poll)


def _csv(value: str | list[str] | None) -> str | None:
    return ",".join(value) if isinstance(value, list) else value


def _media_type(fmt: str | None, name: str) -> str:
    kind = fmt or next((f for s, f in ((".csv", "csv"), (".jsonl", "jsonl"), (".ndjson", "jsonl")) if name.lower().endswith(s)), None)
    return {"csv": "text/csv", "jsonl": "application/x-ndjson"}.get(kind, "application/octet-stream")


def _chunks(stream: IO[bytes], size: int | None, progress: Callable[[float], None] | None) -> Iterator[bytes]:
    """The stream in chunks (requests sends a generator chunked: the file is never read whole)."""
    sent = 0
    while chunk := stream.read(UPLOAD_CHUNK):
        sent += len(chunk)
        if progress and size:
            progress(min(1.0, sent / size))
        yield chunk
