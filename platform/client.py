"""A small HTTP client of the v1 API, for the CLI's `--url` mode and for scripts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import requests

from .errors import MediamatchError


class ApiError(MediamatchError):
    """An error answer of the service: its status, code and message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{message} (HTTP {status} {code})")
        self.status, self.code = status, code


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 120):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        token = token or os.environ.get("MEDIAMATCH_TOKEN")
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.ConnectionError as exc:
            raise MediamatchError(f"cannot reach {self.url}: is `mediamatch serve` running? ({type(exc).__name__})") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "http_error", "message": response.text[:200] or response.reason}
            raise ApiError(response.status_code, error["code"], error["message"])
        return response.json() if response.content else None

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
