"""Object storage: one small key/value interface over a local directory and S3.

Data goes through `pyarrow.fs` (so Ray Data reads the same paths); create-if-absent commits
go through the store's own primitive: a hard link on a local disk (atomic, fails if the name
exists) and `PutObject` with `If-None-Match: *` on S3. Every write is whole or absent:
local writes land in a temporary file first and are renamed or linked into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import uuid
from typing import Any, Iterator
from urllib.parse import urlparse

import pyarrow.fs as pafs

from .errors import StorageError

_TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    """Network and permission failures become StorageError; a missing key stays FileNotFoundError."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, StorageError) as exc:
        raise StorageError(f"object store failed to {what}: {exc}") from exc
    except Exception as exc:  # botocore errors are not OSError
        if type(exc).__module__.startswith(("botocore", "boto3", "urllib3")):
            raise StorageError(f"object store failed to {what}: {exc}") from exc
        raise


class ObjectStore:
    """Keys ('a/b/c.json') under a root URI: a path, file:///path or s3://bucket/prefix."""

    def __init__(self, uri: str, *, endpoint: str | None = None, region: str | None = None):
        self.uri = uri.rstrip("/")
        self.endpoint = endpoint or os.environ.get("MEDIAMATCH_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        parsed = urlparse(self.uri)
        self.is_s3 = parsed.scheme == "s3"
        if self.is_s3:
            if len(parsed.netloc) < 3:
                raise ValueError(f"bad S3 URI {uri!r}: bucket names have at least 3 characters")
            self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
            self.root = f"{self.bucket}/{self.prefix}".rstrip("/")
        elif parsed.scheme in ("", "file"):
            path = parsed.path if parsed.scheme == "file" else self.uri
            self.root = os.path.abspath(os.path.expanduser(path))
        else:
            raise ValueError(f"unsupported storage URI {uri!r}: use a path, file:// or s3://")
        self._fs: pafs.FileSystem | None = None
        self._s3 = None

    @classmethod
    def from_settings(cls, settings) -> "ObjectStore":
        return cls(settings.storage, endpoint=settings.s3_endpoint, region=settings.s3_region)

    def __getstate__(self) -> dict[str, Any]:  # clients are rebuilt in each process
        return {**self.__dict__, "_fs": None, "_s3": None}

    def __repr__(self) -> str:
        return f"ObjectStore({self.uri!r})"

    # -- clients ---------------------------------------------------------------------------
    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:
            if self.is_s3:
                kwargs: dict[str, Any] = {
                    "region": self.region,
                    "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
                    "connect_timeout": 5,
                    "request_timeout": 30,
                }
                if self.endpoint:
                    ep = urlparse(self.endpoint if "://" in self.endpoint else f"http://{self.endpoint}")
                    kwargs.update(endpoint_override=ep.netloc, scheme=ep.scheme)
                self._fs = pafs.S3FileSystem(**kwargs)
            else:
                self._fs = pafs.LocalFileSystem()
        return self._fs

    @property
    def s3(self):
        if self._s3 is None:
            import boto3
            from botocore.config import Config

            self._s3 = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30),
            )
        return self._s3

    # -- paths -----------------------------------------------------------------------------
    def path(self, key: str) -> str:
        """The pyarrow.fs path of a key (what Ray Data's readers take with `filesystem=store.fs`)."""
        return f"{self.root}/{key.lstrip('/')}"

    def _s3_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- reads -----------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        """Bytes of a key; FileNotFoundError when absent."""
        with _storage_errors(f"read {key}"):
            with self.fs.open_input_stream(self.path(key)) as f:
                return f.read()

    @contextlib.contextmanager
    def reader(self, key: str) -> Iterator[Any]:
        """A stream to read a key in parts (`read(n)`), for files too big to hold twice."""
        with _storage_errors(f"read {key}"):
            with self.fs.open_input_stream(self.path(key)) as f:
                yield f

    def get_json(self, key: str) -> Any:
        return json.loads(self.get(key))

    def exists(self, key: str) -> bool:
        with _storage_errors(f"stat {key}"):
            return self.fs.get_file_info(self.path(key)).type == pafs.FileType.File

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys under a prefix folder ('a/b' lists 'a/b/...')."""
        base = self.path(prefix).rstrip("/")
        with _storage_errors(f"list {prefix}"):
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        keys = [
            info.path[len(self.root) + 1 :]
            for info in infos
            if info.type == pafs.FileType.File and not info.base_name.startswith(_TMP_PREFIX)
        ]
        return sorted(keys)

    # -- writes ----------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        """Write (or replace) a key whole: readers see the old bytes or the new, never a part."""
        with _storage_errors(f"write {key}"):
            if self.is_s3:
                with self.fs.open_output_stream(self.path(key)) as f:
                    f.write(data)
                return
        with self.writer(key) as f:
            f.write(data)

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[Any]:
        """A file to write a key through in parts (`write(b)`), for files too big to hold twice:
        the key appears whole when the block ends, and not at all when it raises. Local: a
        temporary file renamed into place; S3: spooled to a local temporary file, then one
        upload (multipart for big files, aborted on failure)."""
        with _storage_errors(f"write {key}"):
            if self.is_s3:
                with tempfile.TemporaryFile() as f:
                    yield f
                    f.seek(0)
                    self.s3.upload_fileobj(f, self.bucket, self._s3_key(key))
                return
            final = self.path(key)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            tmp = os.path.join(os.path.dirname(final), f"{_TMP_PREFIX}{uuid.uuid4().hex}")
            try:
                with open(tmp, "wb") as f:
                    yield f
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def put_json(self, key: str, value: Any) -> None:
        self.put(key, json_bytes(value))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create a key only if it does not exist; False when someone else created it first."""
        with _storage_errors(f"commit {key}"):
            if self.is_s3:
                from botocore.exceptions import ClientError

                try:
                    self.s3.put_object(Bucket=self.bucket, Key=self._s3_key(key), Body=data, IfNoneMatch="*")
                    return True
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                        return False
                    raise
            final = self.path(key)
            tmp = self._write_tmp(final, data)
            try:
                os.link(tmp, final)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)

    def put_json_if_absent(self, key: str, value: Any) -> bool:
        return self.put_if_absent(key, json_bytes(value))

    def delete(self, key: str) -> None:
        with _storage_errors(f"delete {key}"):
            try:
                self.fs.delete_file(self.path(key))
            except FileNotFoundError:
                pass

    def delete_prefix(self, prefix: str) -> None:
        for key in self.list(prefix):
            self.delete(key)

    def _write_tmp(self, final: str, data: bytes) -> str:
        folder = os.path.dirname(final)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
