"""Object storage and the commit log, on a local directory and on S3 (moto on 127.0.0.1)."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from mediamatch.platform.commitlog import CommitLog
from mediamatch.platform.errors import StorageError
from mediamatch.platform.storage import ObjectStore


def test_put_get_list_delete(store):
    store.put("a/b/one.json", b'{"x": 1}')
    store.put_json("a/two.json", {"y": 2})
    assert store.get("a/b/one.json") == b'{"x": 1}'
    assert store.get_json("a/two.json") == {"y": 2}
    assert store.list("a") == ["a/b/one.json", "a/two.json"]
    assert store.exists("a/two.json") and not store.exists("a/three.json")
    store.put("a/two.json", b"replaced")
    assert store.get("a/two.json") == b"replaced"
    store.delete("a/two.json")
    assert store.list("a") == ["a/b/one.json"]
    assert store.list("nothing/here") == []
    with pytest.raises(FileNotFoundError):
        store.get("a/two.json")


def test_put_if_absent_has_exactly_one_winner(store):
    def attempt(i):
        return store.put_if_absent("race/key", f"writer {i}".encode())

    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(attempt, range(16)))
    assert wins.count(True) == 1
    assert store.get("race/key") == f"writer {wins.index(True)}".encode()
    assert store.list("race") == ["race/key"]  # no temporary files left behind


def test_commit_log_concurrent_appends_lose_nothing(store):
    log = CommitLog(store, "log")

    def append(i):
        return CommitLog(store, "log").append({"writer": i})

    with ThreadPoolExecutor(8) as pool:
        numbers = list(pool.map(append, range(40)))
    assert sorted(numbers) == list(range(1, 41))
    assert log.head() == 40
    assert sorted(r["writer"] for _, r in log.read_after(0)) == list(range(40))
    assert [n for n, _ in log.read_after(35)] == [36, 37, 38, 39, 40]
    assert log.head(hint=30) == 40


def test_bad_uris_and_unreachable_store(tmp_path):
    with pytest.raises(ValueError):
        ObjectStore("ftp://somewhere/x")
    with pytest.raises(ValueError):
        ObjectStore("s3://ab/x")
    dead = ObjectStore("s3://bucket-x/y", endpoint="http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(StorageError):
        dead.put_if_absent("k", b"v")
    with pytest.raises(StorageError):
        dead.get("k")


def test_store_pickles_without_clients(store):
    import pickle

    store.put("k", b"v")
    copy = pickle.loads(pickle.dumps(store))
    assert copy.get("k") == b"v"
