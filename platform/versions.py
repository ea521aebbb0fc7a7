"""Index versions in object storage: manifests, the published pointer, rollback, shard loading.

Per signal type, under `indexes/<type>/`:
- `builds/<build_id>/shard-NNNN.*`: a build's files, written before anything names them;
- `versions/`: a commit log of manifests; record N is version `vNNNNNNNN`;
- `current/`: a commit log of pointer moves; its newest record names the published version.
Publishing and rollback append to `current/` with create-if-absent, so concurrent jobs never
lose a move and a job that dies before that append publishes nothing.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from .commitlog import CommitLog
from .errors import MediamatchError, NotFound
from .index import IndexParams, Shard, digest_table, read_index, row_flags
from .signals import get_signal_type
from .storage import ObjectStore, sha256_hex


class ShardFile(BaseModel):
    ids: str  # Parquet: entry_id (and value, for digest tables), row i = faiss id i
    index: str | None = None  # serialized faiss index; None for digest tables
    count: int
    sha256: dict[str, str]  # key -> checksum of each file
    bytes: int
    node: str | None = None  # the Ray node that built it


class Manifest(BaseModel):
    signal_type: str
    version: str = ""
    build_id: str
    params: IndexParams
    count: int
    shards: list[ShardFile]
    built_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    build_seconds: float = 0.0
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    catalog_seq: int | None = None  # catalog commits up to this number are in the index
    banks: dict[str, bool] = Field(default_factory=dict)  # each bank's enabled flag at catalog_seq
    recall_at_10: float | None = None
    recall_method: str = ""
    gpu: bool = False


class IndexChecksumError(MediamatchError):
    code = "index_corrupt"


def version_name(seq: int) -> str:
    return f"v{seq:08d}"


def version_seq(version: str) -> int:
    if not (version.startswith("v") and version[1:].isdigit()):
        raise NotFound(f"no index version {version!r}: versions look like v00000001")
    return int(version[1:])


class IndexVersions:
    def __init__(self, store: ObjectStore, signal_type: str):
        get_signal_type(signal_type)
        self.store = store
        self.signal_type = signal_type
        self.prefix = f"indexes/{signal_type}"
        self.versions = CommitLog(store, f"{self.prefix}/versions")
        self.pointer = CommitLog(store, f"{self.prefix}/current")

    def build_prefix(self, build_id: str) -> str:
        return f"{self.prefix}/builds/{build_id}"

    def record(self, manifest: Manifest) -> Manifest:
        """Commit the manifest as the next version (not yet published)."""
        seq = self.versions.append(lambda n: manifest.model_copy(update={"version": version_name(n)}).model_dump())
        return self.get(version_name(seq))

    def point(self, version: str, reason: str) -> Manifest:
        """Move the `current` pointer to a recorded version (publish, rollback, roll forward)."""
        manifest = self.get(version)
        at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.pointer.append({"version": version, "reason": reason, "at": at})
        return manifest

    def publish(self, manifest: Manifest) -> Manifest:
        return self.point(self.record(manifest).version, "publish")

    def rollback(self, version: str) -> Manifest:
        return self.point(version, "rollback")

    def current_version(self) -> str | None:
        head = self.pointer.head()
        return self.pointer.read(head)["version"] if head else None

    def current(self) -> Manifest | None:
        version = self.current_version()
        return self.get(version) if version else None

    def get(self, version: str) -> Manifest:
        try:
            return Manifest(**self.versions.read(version_seq(version)))
        except FileNotFoundError:
            raise NotFound(f"no {self.signal_type} index version {version}") from None

    def list(self) -> list[Manifest]:
        return [Manifest(**record) for _, record in self.versions.read_after(0)]

    def load_shard(self, manifest: Manifest, number: int) -> Shard:
        """Load one shard, checking every file against the manifest's checksum."""
        files = manifest.shards[number]
        table = pq.read_table(pa.BufferReader(self._checked(files.ids, files.sha256[files.ids])))
        params, ids, flags = manifest.params, table.column("entry_id"), row_flags(table)
        if params.type == "exact":
            shard = Shard.of(params, ids, **flags, table=digest_table(table.column("value").to_pylist()))
        elif params.type == "postings":
            shard = Shard.of(params, ids, **flags, keys=table.column("value").to_numpy().astype(np.uint32))
        elif params.type == "stored":
            shard = Shard.of(params, ids, **flags, values=np.asarray(table.column("value").to_pylist(), dtype=object))
        else:
            shard = Shard.of(params, ids, **flags, index=self._checked_index(params, files.index, files.sha256[files.index]))
        shard.bank_enabled = dict(manifest.banks)
        return shard

    def _checked(self, key: str, checksum: str) -> bytes:
        data = self.store.get(key)
        if sha256_hex(data) != checksum:
            raise IndexChecksumError(f"{key} does not match its manifest checksum")
        return data

    def _checked_index(self, params: IndexParams, key: str, checksum: str):
        """An index read from its file in parts and hashed on the way, so that the file's bytes
        are never held beside the index (a 5M-vector float shard's are 2.6 GB); it is used only
        once the whole file matched the checksum."""
        digest = hashlib.sha256()

        with self.store.reader(key) as f:
            def read(n: int) -> bytes:
                data = f.read() if n < 0 else f.read(n)
                digest.update(data)
                return data

            try:
                index = read_index(params, read)
            except Exception as exc:  # a damaged file may not even parse: say which it is
                read(-1)
                if digest.hexdigest() != checksum:
                    raise IndexChecksumError(f"{key} does not match its manifest checksum") from exc
                raise
            read(-1)  # whatever the reader left
        if digest.hexdigest() != checksum:
            raise IndexChecksumError(f"{key} does not match its manifest checksum")
        return index

    def status(self) -> dict[str, Any]:
        manifest = self.current()
        if manifest is None:
            return {"version": None, "count": 0, "shards": 0}
        return {
            "version": manifest.version,
            "count": manifest.count,
            "shards": len(manifest.shards),
            "built_at": manifest.built_at,
            "params": manifest.params.model_dump(exclude_none=True),
            "recall_at_10": manifest.recall_at_10,
        }
