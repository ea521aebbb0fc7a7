"""The interface every signal type implements, and the index kinds behind them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Sequence

import numpy as np

from ..errors import InvalidInput
from ..settings import LimitSettings

IndexKind = Literal["binary", "float", "exact", "postings", "stored"]  # stored: kept per entry, looked up by id, never searched


@dataclass(frozen=True)
class Signal:
    """One computed signal: its value, a quality in [0, 100] where the type has one, and why
    there is no value when `value` is None (e.g. a PDQ hash of too low quality)."""

    value: Any
    quality: float | None = None
    reason: str | None = None


class SignalType(ABC):
    name: ClassVar[str]
    content_types: ClassVar[frozenset[str]]
    index_kind: ClassVar[IndexKind]
    dim: ClassVar[int] = 0  # bits (binary) or floats (float)
    default_threshold: ClassVar[float]
    unit: ClassVar[str]
    needs_model: ClassVar[bool] = False  # expensive: computed by batched model actors
    bag: ClassVar[bool] = False  # a value is many index rows (video frames, audio landmarks): see BagSignal
    query_form: ClassVar[bool] = False  # a query is computed differently from a banked item: compute_query
    forms: ClassVar[tuple[str, ...]] = ()  # a query value of several index rows: what row i of it is (query_rows)

    @property
    def index_radius(self) -> float:
        """How far apart two index rows may be and still match (the row unit)."""
        return self.default_threshold

    @property
    def searched(self) -> bool:
        """Whether the service searches an index of it (else its values are only looked up by entry)."""
        return self.index_kind != "stored"

    def configure(self, settings) -> None:
        """Take what this type needs from the settings (which model, where); most need nothing."""

    def warm_up(self) -> None:
        """Load the model now rather than on the first request (model types)."""

    @abstractmethod
    def compute(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        """The signal of one item (media bytes, or text)."""

    def compute_query(self, content: bytes | str, limits: LimitSettings = LimitSettings()) -> Signal:
        """The signal of an item to match (types with `query_form` widen it, e.g. speed variants)."""
        return self.compute(content, limits)

    def shown(self, value: Any) -> Any:
        """What a match result shows of a query value: the item's own signal, as `/v1/hash` gives it."""
        return value

    def query_rows(self, values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """(index rows of query values, the value each row came from; rows grouped by value, in
        order): one row a value, unless the type's query form holds several, row i being
        `forms[i]` (pdq's dihedral forms). Bag types search their `rows` instead."""
        return self.encode(values), np.arange(len(values))

    def compute_batch(self, contents: Sequence[bytes | str], limits: LimitSettings = LimitSettings()) -> list[Signal]:
        return [self.compute(c, limits) for c in contents]

    @abstractmethod
    def parse(self, value: Any) -> Any:
        """The canonical form of a value given by a client (raw signal banking); InvalidInput if malformed."""

    @abstractmethod
    def encode(self, values: Sequence[Any]) -> np.ndarray:
        """Values in the form the index holds: packed uint8 bits, float32 rows, or strings."""

    @abstractmethod
    def distance(self, a: Any, b: Any) -> float:
        """Distance in the type's own unit between two canonical values."""

    def score(self, distance: float) -> float:
        """Similarity in [0, 1], higher is more similar."""
        return 1.0 if distance == 0 else 0.0


class BinaryHashSignal(SignalType):
    """A fixed-length bit hash in hex, compared by Hamming distance."""

    index_kind = "binary"
    unit = "hamming bits"

    def parse(self, value: Any) -> str:
        return parse_hex(self.name, value, self.dim // 4)

    def encode(self, values: Sequence[str]) -> np.ndarray:
        return np.frombuffer(b"".join(bytes.fromhex(v) for v in values), dtype=np.uint8).reshape(len(values), self.dim // 8)

    def distance(self, a: str, b: str) -> float:
        return float((int(a, 16) ^ int(b, 16)).bit_count())

    def score(self, distance: float) -> float:
        return max(0.0, 1.0 - distance / self.dim)


UNIT_NORM_TOLERANCE = 1e-6  # float32 rounding of a normalised vector's length is ~1e-7


class FloatVectorSignal(SignalType):
    """An L2-normalised float vector compared by cosine distance (1 - cosine similarity)."""

    index_kind = "float"
    unit = "cosine distance"

    def parse(self, value: Any) -> list[float]:
        try:
            with np.errstate(over="ignore"):  # too large for float32: infinite, refused below
                vector = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError, OverflowError):
            raise InvalidInput(f"{self.name} must be a list of {self.dim} numbers") from None
        if vector.shape != (self.dim,) or not np.isfinite(vector).all() or not np.any(vector):
            raise InvalidInput(f"{self.name} must be a list of {self.dim} finite numbers, not all zero")
        return self.encode([vector])[0].tolist()

    def encode(self, values: Sequence[Any]) -> np.ndarray:
        matrix = np.asarray(values, dtype=np.float32).reshape(len(values), self.dim)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        # A row already of unit length stays as it is: dividing again would move its last bits, so
        # a value exported and imported back (or parsed twice) would not be the same value.
        norms = np.where(np.abs(norms - 1.0) <= UNIT_NORM_TOLERANCE, 1.0, np.maximum(norms, 1e-12))
        return np.ascontiguousarray(matrix / norms, dtype=np.float32)

    def distance(self, a: Any, b: Any) -> float:
        va, vb = self.encode([a, b])
        return float(1.0 - np.dot(va, vb))

    def score(self, distance: float) -> float:
        return min(1.0, max(0.0, 1.0 - distance))


class ExactSignal(SignalType):
    """A digest matched only when equal."""

    index_kind = "exact"
    unit = "exact"
    default_threshold = 0
    digest_chars: ClassVar[int]

    def parse(self, value: Any) -> str:
        return parse_hex(self.name, value, self.digest_chars)

    def encode(self, values: Sequence[str]) -> np.ndarray:
        return np.asarray(values, dtype=object)

    def distance(self, a: str, b: str) -> float:
        return 0.0 if a == b else float("inf")


@dataclass
class RowHits:
    """Hits of a bag query's rows, one element per (query row, banked row) pair."""

    query_row: np.ndarray  # int64: which row of the query
    entry: np.ndarray  # object: the banked row's entry id
    distance: np.ndarray  # float: row distance, in the rows' unit
    banked_row: np.ndarray  # int64: unique per banked row
    banked_time: np.ndarray  # float: the banked row's time, seconds

    def __len__(self) -> int:
        return len(self.query_row)

    def by_entry(self) -> tuple[np.ndarray, np.ndarray]:
        """(the distinct entries, each hit's index into them)."""
        return np.unique(self.entry.astype(str), return_inverse=True)


class BagSignal(SignalType):
    """A value that is a bag of rows in the index: the frames of a video, the landmarks of a
    recording. Each row of a query is searched within `row_radius` (in the rows' own unit); the
    hits are then aggregated per banked entry (`aggregate`) into the type's distance, which the
    threshold applies to. An entry's rows always live in one shard and one searcher slot, so a
    slot sees every row of the entries it answers for.

    `index_kind` and `dim` describe one row; a value itself is a string (`parse` checks it)."""

    bag = True
    row_radius: ClassVar[float]

    @property
    def index_radius(self) -> float:
        return self.row_radius

    @abstractmethod
    def rows(self, values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows as the index holds them, the value each row came from, each row's time in seconds)."""

    def encode(self, values: Sequence[Any]) -> np.ndarray:
        return self.rows(values)[0]

    @abstractmethod
    def aggregate(self, query_times: np.ndarray, hits: RowHits, banked_rows: dict[str, int]) -> dict[str, float]:
        """Each candidate entry's distance to the query, from the hits of the query's rows
        (`query_times`: one per query row) and each candidate's number of rows."""


def parse_hex(name: str, value: Any, chars: int) -> str:
    """A lower-case hex string of exactly `chars` characters, or InvalidInput saying what is wrong."""
    if not isinstance(value, str) or len(value) != chars:
        raise InvalidInput(f"{name} must be a {chars}-character hex string")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise InvalidInput(f"{name} must be hexadecimal, got {value[:80]!r}") from None
    return value.lower()
