"""Model versions in object storage, and where the service's descriptor comes from.

Per model name (`image_embedding`), under `models/<name>/`:
- `builds/<build_id>/`: `config.json`, `weights.pt` and the training run's evaluation report
  (`eval.md`, `eval.png`, `eval.json`), written before anything names them;
- `versions/`: a commit log of `ModelRecord`s; record N is version `mNNNNNNNN`;
- `promoted/`: a commit log of promotions; its newest record names the model the service uses.
The package ships a default model (`platform/models/default/`), used until one is promoted.
"""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, Field

from ..commitlog import CommitLog
from ..errors import InvalidInput, NotFound
from ..storage import ObjectStore, sha256_hex
from .config import DescriptorConfig

MODEL_FILES = ("config.json", "weights.pt")


class ModelRecord(BaseModel):
    name: str
    version: str = ""
    build_id: str
    files: dict[str, str]  # key -> sha256
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    config: DescriptorConfig


class ModelVersions:
    def __init__(self, store: ObjectStore, name: str = "image_embedding"):
        self.store, self.name = store, name
        self.prefix = f"models/{name}"
        self.versions = CommitLog(store, f"{self.prefix}/versions")
        self.promotions = CommitLog(store, f"{self.prefix}/promoted")

    def build_prefix(self, build_id: str) -> str:
        return f"{self.prefix}/builds/{build_id}"

    def record(self, build_id: str, files: dict[str, bytes], config: DescriptorConfig) -> ModelRecord:
        """Write a build's files, then commit it as the next version (not promoted)."""
        prefix = self.build_prefix(build_id)
        for name, data in files.items():
            self.store.put(f"{prefix}/{name}", data)
        checksums = {f"{prefix}/{name}": sha256_hex(data) for name, data in files.items()}

        def record(seq: int) -> dict:
            version = f"m{seq:08d}"
            return ModelRecord(name=self.name, version=version, build_id=build_id, files=checksums,
                               config=config.model_copy(update={"version": version})).model_dump()

        return ModelRecord(**self.versions.read(self.versions.append(record)))

    def get(self, version: str) -> ModelRecord:
        if not (version.startswith("m") and version[1:].isdigit()):
            raise NotFound(f"no model version {version!r}: model versions look like m00000001")
        try:
            return ModelRecord(**self.versions.read(int(version[1:])))
        except FileNotFoundError:
            raise NotFound(f"no {self.name} model version {version}") from None

    def list(self) -> list[ModelRecord]:
        return [ModelRecord(**record) for _, record in self.versions.read_after(0)]

    def promote(self, version: str) -> ModelRecord:
        record = self.get(version)
        self.promotions.append({"version": version, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        return record

    def promoted(self) -> str | None:
        head = self.promotions.head()
        return self.promotions.read(head)["version"] if head else None

    def file(self, record: ModelRecord, name: str) -> bytes:
        key = f"{self.build_prefix(record.build_id)}/{name}"
        data = self.store.get(key)
        if sha256_hex(data) != record.files[key]:
            raise InvalidInput(f"{key} does not match its recorded checksum")
        return data

    def load(self, version: str):
        """The ImageDescriptor of a version (imports torch)."""
        from .descriptor import ImageDescriptor

        record = self.get(version)
        return ImageDescriptor.from_bytes(record.config.model_dump_json(), self.file(record, "weights.pt"))


def default_model_dir() -> Path:
    return Path(str(resources.files("mediamatch.platform.models"))) / "default"


def load_from_dir(folder: str | Path):
    """The ImageDescriptor in a model folder (imports torch)."""
    from .descriptor import ImageDescriptor

    folder = _model_dir(folder)
    return ImageDescriptor.from_bytes((folder / "config.json").read_bytes(), (folder / "weights.pt").read_bytes())


def _model_dir(folder: str | Path) -> Path:
    folder = Path(folder)
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise NotFound(f"{folder} is not a model folder: {', '.join(missing)} missing")
    return folder


def resolve_source(source: str, store: ObjectStore | None) -> str | Path:
    """What the `image_model` setting names, as a stored version `mNNNNNNNN` or a model folder:
    `promoted` (the store's promoted version, else the packaged default), `default`, a version,
    or a folder holding config.json and weights.pt."""
    if source == "promoted":
        version = ModelVersions(store).promoted() if store is not None else None
        return version or default_model_dir()
    if source == "default":
        return default_model_dir()
    if _is_version(source):
        if store is None:
            raise InvalidInput(f"model version {source} needs an object store")
        return source
    return _model_dir(source)


def _is_version(source: str | Path) -> bool:
    return isinstance(source, str) and source.startswith("m") and source[1:].isdigit()


def resolve_model(source: str, store: ObjectStore | None):
    """The ImageDescriptor the `image_model` setting names (see `resolve_source`)."""
    where = resolve_source(source, store)
    return ModelVersions(store).load(where) if _is_version(where) else load_from_dir(where)


def resolve_config(source: str, store: ObjectStore | None) -> DescriptorConfig:
    """Its config alone, without torch or the weights (the ingress needs only the threshold)."""
    where = resolve_source(source, store)
    if _is_version(where):
        return ModelVersions(store).get(where).config
    return DescriptorConfig.model_validate_json((_model_dir(where) / "config.json").read_bytes())
