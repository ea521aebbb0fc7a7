"""A small HTTP client of the v1 API, for the CLI's `--url` mode and for scripts."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import requests

from .errors import MediamatchError


class ApiError(MediamatchError):
    """An error answer of the service: its status, code and message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{message} (HTTP {status} {code})")
        self.status, self.code = status, code


RETRY_STATUS = (429, 502, 503, 504)


class Client:
    """Calls with `retries` > 0 are retried on connection errors and on 429/502/503/504 (after
    `Retry-After` when the service sends one, else with exponential backoff): use them for
    idempotent requests (matching, hashing, reading)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 120, retries: int = 0, backoff: float = 0.25):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        token = token or os.environ.get("MEDIAMATCH_TOKEN")
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.retried = 0  # requests sent again, over this client's life

    def call(self, method: str, path: str, retries: int | None = None, **kwargs: Any) -> Any:
        attempts = 1 + (self.retries if retries is None else retries)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
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
        return response.json() if response.content else None

    def _pause(self, attempt: int, retry_after: str | None) -> None:
        self.retried += 1
        time.sleep(float(retry_after) if retry_after and retry_after.isdigit() else self.backoff * 2**attempt)

    def upload(self, path: str, file: Path, fields: dict[str, str | None]) -> Any:
        with open(file, "rb") as handle:
            data = {k: v for k, v in fields.items() if v is not None}
            return self.call("POST", path, files={"file": (file.name, handle)}, data=data)

    def match_file(self, file: Path, banks: str | None = None, signal_types: str | None = None, content_type: str | None = None) -> dict:
        return self.upload("/v1/match", file, {"banks": banks, "signal_types": signal_types, "content_type": content_type})

    def match_text(self, text: str, banks: list[str] | None = None, signal_types: list[str] | None = None) -> dict:
        return self.call("POST", "/v1/match", json={"text": text, "banks": banks, "signal_types": signal_types})

    def add_file(self, bank: str, file: Path, content_type: str | None = None, metadata: dict | None = None) -> dict:
        return self.upload(f"/v1/banks/{bank}/entries", file, {"content_type": content_type, "metadata": json.dumps(metadata) if metadata else None})

    def add_text(self, bank: str, text: str, metadata: dict | None = None) -> dict:
        return self.call("POST", f"/v1/banks/{bank}/entries", json={"text": text, "metadata": metadata or {}})
