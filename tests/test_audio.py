"""audio_fingerprint: landmark hashes matched through the service's path (catalog, live index,
postings shards), decoding limits and value parsing."""

from __future__ import annotations

import io
import shutil
import subprocess
import time

import av
import numpy as np
import pytest

from mediamatch.platform.catalog import Catalog, Entry
from mediamatch.platform.errors import InvalidInput, TooLarge, UnsupportedMedia
from mediamatch.platform.index import IndexParams, Shard
from mediamatch.platform.live import LiveIndex
from mediamatch.platform.settings import LimitSettings
from mediamatch.platform.signals import audio as A
from mediamatch.platform.storage import ObjectStore

RATE = 16000
SIGNAL = A.AudioFingerprint()
SPEECH = {
    "speech-a": ("en-us", "The quick brown fox jumps over the lazy dog while the committee reviews the budget "
                 "for the next fiscal year, and nobody remembers where the keys to the archive were left. The secretary "
                 "suggests that the meeting be postponed until the spring, when the roads are open again and the "
                 "treasurer has returned from her long journey to the coast."),
    "speech-b": ("en-gb", "Packages are unpacked in a temporary directory, their scripts run in order, and any "
                 "failure rolls the whole transaction back so that the system is never left half configured. Each "
                 "trigger is processed once at the end, and the administrator reads a short summary of what changed, "
                 "which services were restarted, and which configuration files need a closer look."),
}


def synthetic(seconds: float, seed: int) -> np.ndarray:
    """Chirps, tone bursts and a little noise: a non-trivial, reproducible signal."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = np.zeros_like(t)
    for _ in range(int(seconds * 8)):
        start, length = rng.uniform(0, seconds - 0.5), rng.uniform(0.1, 0.6)
        f0, f1 = rng.uniform(200, 3000, size=2)
        on = (t >= start) & (t < start + length)
        tau = t[on] - start
        x[on] += np.sin(2 * np.pi * (f0 * tau + (f1 - f0) * tau**2 / (2 * length))) * np.hanning(on.sum())
    x += 0.05 * rng.normal(size=t.size)
    return (0.4 * x / np.abs(x).max()).astype(np.float32)


def speech(voice: str, text: str) -> np.ndarray:
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], check=True, capture_output=True).stdout
    return A.decode_audio(wav, RATE)


def encode(x: np.ndarray, fmt: str = "wav", codec: str = "pcm_s16le", rate: int = RATE, channels: int = 1, bit_rate: int | None = None) -> bytes:
    buf = io.BytesIO()
    layout = "mono" if channels == 1 else "stereo"
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout, options={"strict": "experimental"} if codec == "vorbis" else {})
        if bit_rate:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(np.repeat(np.clip(x, -1, 1)[None], channels, 0).astype(np.float32), format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def faster(x: np.ndarray, factor: float) -> np.ndarray:
    return A._resample(x, 1 / factor)


def bank_values(store: ObjectStore, values: dict[str, str], bank: str = "audio") -> tuple[Catalog, dict[str, str]]:
    """A catalog with one bank holding `values` (key -> af1 value); returns it and entry id -> key."""
    catalog = Catalog(store)
    catalog.create_bank(bank)
    entries = catalog.add_entries(bank, [Entry(bank=bank, content_type="audio", signals={SIGNAL.name: v}, metadata={"key": k})
                                         for k, v in values.items()])
    return catalog, {e.entry_id: e.metadata["key"] for e in entries}


def search(live: LiveIndex, values: list[str], k: int = 5) -> list[list[tuple[str, str, float]]]:
    return live.search_bags(values, k, SIGNAL.default_threshold)[1]


class Bank:
    """Two synthetic items and (when espeak-ng is installed) two speech passages, banked in a
    catalog on a local store and searched through a `LiveIndex` of its commits."""

    def __init__(self, root):
        self.items = {"synth-a": synthetic(20, 1), "synth-b": synthetic(20, 2)}
        if shutil.which("espeak-ng"):
            self.items.update({key: speech(voice, text) for key, (voice, text) in SPEECH.items()})
        self.values = {key: SIGNAL.compute(encode(x)).value for key, x in self.items.items()}
        self.store = ObjectStore(str(root))
        self.catalog, self.keys = bank_values(self.store, self.values)
        self.live = LiveIndex(self.store, SIGNAL)

    def best(self, media: list[bytes]) -> list[tuple[str | None, float | None]]:
        """Per query, the key of the top match within the default threshold and its distance."""
        found = search(self.live, [SIGNAL.compute_query(m).value for m in media])
        return [(self.keys[hits[0][0]], hits[0][2]) if hits else (None, None) for hits in found]

    def of_kind(self, prefix: str) -> list[str]:
        present = [k for k in self.items if k.startswith(prefix)]
        if not present:
            pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng): no speech to test with")
        return present


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    return Bank(tmp_path_factory.mktemp("audio-store"))


EDITS = {
    "mp3": lambda x: encode(x, "mp3", "libmp3lame", bit_rate=64_000),
    "ogg": lambda x: encode(x, "ogg", "vorbis", channels=2),
    "excerpt 10 s": lambda x: encode(x[len(x) // 2 - 5 * RATE : len(x) // 2 + 5 * RATE]),
    "volume x0.3": lambda x: encode(0.3 * x),
    "speed +5%": lambda x: encode(faster(x, 1.05)),
    "speed -5%": lambda x: encode(faster(x, 0.95)),
}


@pytest.mark.parametrize("edit", EDITS)
@pytest.mark.parametrize("kind", ["synth", "speech"])
def test_edited_copy_matches_its_original(bank, kind, edit):
    keys = bank.of_kind(kind)
    queries = [SIGNAL.compute_query(EDITS[edit](bank.items[key])).value for key in keys]
    for key, query, hits in zip(keys, queries, search(bank.live, queries)):
        assert hits and bank.keys[hits[0][0]] == key, (key, edit, hits)
        # the pairwise distance scores a pair as the search does
        assert SIGNAL.distance(query, bank.values[key]) == pytest.approx(hits[0][2])


def test_unrelated_recording_does_not_match(bank):
    others = [encode(synthetic(15, 99))]
    if shutil.which("espeak-ng"):
        others.append(encode(speech("en-us", "A completely different sentence about rivers, mountains and the "
                                             "weather in late autumn, read slowly by someone else.")))
    assert bank.best(others) == [(None, None)] * len(others)


def test_disabled_entry_stops_matching_after_catch_up(bank, tmp_path):
    catalog, keys = bank_values(ObjectStore(str(tmp_path)), {k: bank.values[k] for k in ("synth-a", "synth-b")})
    live = LiveIndex(catalog.store, SIGNAL)
    query = SIGNAL.compute_query(EDITS["excerpt 10 s"](bank.items["synth-a"])).value
    [[(entry_id, _, _, _)]] = search(live, [query])
    assert keys[entry_id] == "synth-a"
    catalog.update_entry("audio", entry_id, enabled=False)
    live.catch_up(live.state)
    assert search(live, [query]) == [[]]
    catalog.update_entry("audio", entry_id, enabled=True)
    live.catch_up(live.state)
    assert [h[0] for h in search(live, [query])[0]] == [entry_id]


def test_query_reads_only_the_postings_of_its_hashes(tmp_path):
    """A published postings shard of 2,000 tracks (3,000,000 rows, hashes < 2**20) and a track
    banked since (hashes >= 2**20): a query sharing no hash with either answers at once, and an
    excerpt of the new track finds it."""
    rng = np.random.default_rng(0)
    tracks, length = 2000, 1500
    ids = np.asarray([f"t{i}" for i in range(tracks)], dtype=object)
    shard = Shard.build(IndexParams(type="postings"), np.repeat(ids, length), rng.integers(0, 1 << 20, tracks * length, dtype=np.uint32),
                        None, banks=np.full(tracks * length, "big", dtype=object), times=np.tile(np.arange(length) / A.FRAMES_PER_SECOND, tracks))
    planted = np.stack([rng.integers(1 << 20, 1 << 21, 800), np.arange(800) + 100], 1).astype(np.uint32)
    catalog, keys = bank_values(ObjectStore(str(tmp_path)), {"planted": A.encode_value(planted)})
    live = LiveIndex(catalog.store, SIGNAL)
    live.state.shards.append(shard)  # as `LiveIndex.load` does with a published version's shards
    live.state.entry_rows.update(dict.fromkeys(ids.tolist(), length))

    absent = A.encode_value(np.stack([np.sort(rng.integers(1 << 20, 1 << 21, length)), np.arange(length)], 1))
    search(live, [absent])  # warm-up: sorts the shard's keys once
    t0 = time.perf_counter()
    for _ in range(20):
        assert search(live, [absent]) == [[]]
    absent_ms = (time.perf_counter() - t0) / 20 * 1000
    assert absent_ms < 30, absent_ms  # no scan of the 3,000,000 rows

    excerpt = planted[200:500].copy()
    excerpt[:, 1] -= 300
    [[(entry_id, bank, distance, _)]] = search(live, [A.encode_value(excerpt)])
    assert (keys[entry_id], bank, distance) == ("planted", "audio", 0.0)  # all 300 vote for one offset


def test_landmarks_are_deterministic_and_volume_invariant():
    x = synthetic(8, 3)
    a, b = A.landmarks(x, RATE), A.landmarks(x.copy(), RATE)
    assert a.dtype == np.uint32 and a.shape[1] == 2 and a.shape[0] > 100
    assert np.array_equal(a, b)
    assert np.array_equal(a, A.landmarks(0.25 * x, RATE))


def test_value_roundtrip_and_distance(bank):
    value, other = bank.values["synth-a"], bank.values["synth-b"]
    assert SIGNAL.parse(value) == value
    assert SIGNAL.distance(value, value) == pytest.approx(0.0)
    assert SIGNAL.distance(value, other) == 1.0
    assert SIGNAL.score(SIGNAL.distance(value, value)) == pytest.approx(1.0)
    assert SIGNAL.name == "audio_fingerprint" and SIGNAL.content_types == {"audio"}


def test_query_value_holds_every_speed_variant(bank):
    query = SIGNAL.compute_query(encode(bank.items["synth-a"])).value
    assert query.startswith("af1q:") and SIGNAL.parse(query) == query
    frames = A.decode_value(query)[:, 1]
    assert set((frames // A.VARIANT_STRIDE).tolist()) == set(range(len(A.QUERY_SPEEDS)))
    # variant 0 (speed 1) is the banked value's landmarks
    assert np.array_equal(A.decode_value(query)[frames < A.VARIANT_STRIDE], A.decode_value(bank.values["synth-a"]))


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "must be a string"),
        (123, "must be a string"),
        ("AAAA", "must be a string 'af1:"),
        ("af1:not base64!", "standard base64"),
        ("af1q:not base64!", "standard base64"),
        ("af1:AAAAAAA", "not valid base64"),
        ("af1:" + "A" * 12, "not a whole number"),
        (A.encode_value(np.zeros((3, 2), np.uint32)), "fewer than"),
        (A.encode_value(np.array([[1 << 30, i] for i in range(20)], np.uint32)), "over 21 bits"),
        (A.encode_value(np.array([[5, 20 - i] for i in range(20)], np.uint32)), "sorted by frame"),
    ],
)
def test_parse_rejects_malformed_values(value, message):
    with pytest.raises(InvalidInput, match=message):
        SIGNAL.parse(value)


def test_garbage_and_non_audio_are_unsupported_media():
    for data in (b"", b"this is not audio at all " * 200, bytes(range(256)) * 40):
        with pytest.raises(UnsupportedMedia):
            SIGNAL.compute(data)
    with pytest.raises(UnsupportedMedia, match="not text"):
        SIGNAL.compute("some text")
    with pytest.raises(UnsupportedMedia, match="not text"):
        SIGNAL.compute_query("some text")


def test_image_without_audio_stream_is_unsupported_media():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, format="PNG")
    with pytest.raises(UnsupportedMedia, match="no audio stream"):
        A.decode_audio(buf.getvalue())


def test_too_long_and_too_big_are_refused_with_the_limit():
    data = encode(np.zeros(RATE * 12, np.float32))
    with pytest.raises(TooLarge, match="limit of 10 s"):
        A.decode_audio(data, max_seconds=10)
    with pytest.raises(TooLarge, match="over the limit of 1000"):
        SIGNAL.compute(data, LimitSettings(max_upload_bytes=1000))
    with pytest.raises(TooLarge, match="limit of 10 s"):
        SIGNAL.compute_query(data, LimitSettings(max_audio_seconds=10))


def test_silence_has_no_value_and_a_reason():
    for compute in (SIGNAL.compute, SIGNAL.compute_query):
        signal = compute(encode(np.zeros(RATE * 3, np.float32)))
        assert signal.value is None and "too short or silent" in signal.reason
