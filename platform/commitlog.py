"""An append-only log of JSON records in object storage.

Record N lives at `<prefix>/<N:012d>.json` and is written with create-if-absent, so two
writers can never both commit N: the loser re-reads and tries N+1. The bank catalog and the
index version pointers are both such logs; readers follow one by probing for the next number,
which costs one small read per poll whatever the log's length.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from .storage import ObjectStore


class CommitLog:
    def __init__(self, store: ObjectStore, prefix: str):
        self.store = store
        self.prefix = prefix.rstrip("/")

    def key(self, seq: int) -> str:
        return f"{self.prefix}/{seq:012d}.json"

    def head(self, hint: int = 0) -> int:
        """The last committed number (0 for an empty log). With a hint, probe forward from it."""
        if hint == 0:
            keys = self.store.list(self.prefix)
            numbers = [int(k.rsplit("/", 1)[1][:-5]) for k in keys if k.endswith(".json")]
            hint = max(numbers, default=0)
        for hint, _ in self.read_after(hint):
            pass
        return hint

    def read(self, seq: int) -> dict[str, Any]:
        return self.store.get_json(self.key(seq))

    def read_after(self, seq: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """Records seq+1, seq+2, ... up to the current end."""
        while True:
            seq += 1
            try:
                yield seq, self.read(seq)
            except FileNotFoundError:
                return

    def try_append(self, seq: int, record: dict[str, Any]) -> bool:
        """Commit `record` as number `seq`; False if that number is already taken."""
        return self.store.put_json_if_absent(self.key(seq), record)

    def append(self, record: dict[str, Any] | Callable[[int], dict[str, Any]], hint: int = 0) -> int:
        """Commit `record` (or `record(seq)`) as the next number, whatever other writers do."""
        seq = self.head(hint) + 1
        while not self.try_append(seq, record(seq) if callable(record) else record):
            seq += 1
        return seq
