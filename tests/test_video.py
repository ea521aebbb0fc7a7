"""Video: vPDQ frame sampling and hashes against the reference files, both video signals on the sample videos, limits."""

import base64
import io
import wave

import numpy as np
import pytest

from conftest import CONFORMANCE
from mediamatch.platform.errors import InvalidInput, TooLarge, UnsupportedMedia
from mediamatch.platform.settings import LimitSettings
from mediamatch.platform.signals import video
from mediamatch.platform.signals.video import VPDQ, VideoFrameHash, decode_frames, dedupe, is_match, match, vpdq_hash

VIDEOS = CONFORMANCE / "tmk" / "sample-videos"
HASHES = CONFORMANCE / "vpdq" / "sample-hashes"


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def reference(name: str) -> list[tuple[int, int, str, str]]:
    """(frame_number, quality, pdq_hex, timestamp text) per line of a reference file."""
    rows = []
    for line in (HASHES / f"{name}.txt").read_text().split():
        number, quality, pdq_hex, seconds = line.split(",")
        rows.append((int(number), int(quality), pdq_hex, seconds))
    return rows


def with_reference() -> list[str]:
    return sorted(p.stem for p in VIDEOS.glob("*.mp4") if (HASHES / f"{p.stem}.txt").exists())


def assert_agrees(ours: list[VideoFrameHash], ref: list[tuple[int, int, str, str]]) -> list[int]:
    """Same frames and timestamps; PDQ within 10 bits where the reference quality is >= 80 (the PDQ
    reference's allowance for decoder differences), within 31 where it is >= 50; quality within 1."""
    assert [(f.frame_number, f"{f.timestamp:.3f}") for f in ours] == [(r[0], r[3]) for r in ref]
    distances = []
    for frame, (number, quality, pdq_hex, _) in zip(ours, ref):
        distance = hamming(frame.pdq_hex, pdq_hex)
        assert abs(frame.quality - quality) <= 1, (number, frame.quality, quality)
        if quality >= 80:
            assert distance <= 10, (number, distance, quality)
            distances.append(distance)
        elif quality >= 50:
            assert distance <= 31, (number, distance, quality)
    return distances


# ---------------------------------------------------------------- conformance


@pytest.mark.parametrize("name", with_reference())
def test_sampling_at_one_fps_picks_the_reference_frames(name):
    """The reference hashes frame n when n % int(video_fps / fps) == 0, at n / video_fps seconds."""
    ref = reference(name)
    frames = [(n, f"{t:.3f}") for n, t, _ in decode_frames((VIDEOS / f"{name}.mp4").read_bytes(), fps=1)]
    assert frames == [(r[0], r[3]) for r in ref if r[0] % 30 == 0]


@pytest.mark.parametrize(
    "name, fps",
    [("doorknob-hd-no-bar", 10), ("pattern-sd-grey-bar", 30), ("test-padded-dimensions", 10), ("chair-19-sd-bar", 3)],
)
def test_full_resolution_hashes_agree_with_reference(name, fps):
    ours = vpdq_hash((VIDEOS / f"{name}.mp4").read_bytes(), fps=fps)
    ref = [r for r in reference(name) if r[0] % round(30 / fps) == 0]
    distances = assert_agrees(ours, ref)
    assert distances and np.mean(distances) <= 2.5  # measured over all 13 videos: 52% identical, 99% within 4


# ---------------------------------------------------------------- matching the sample videos

# Every frame hashed (the reference files' setting), frames scaled to 128x128 as the reference's
# '-128x128' files were (2.5x faster than full resolution, same match matrix on these videos).
SIBLINGS = [
    "chair-19-sd-bar",
    "chair-20-sd-bar",
    "chair-22-with-large-logo-bar",
    "doorknob-hd-no-bar",
    "pattern-hd-no-bar",
    "pattern-longer-no-bar",
    "pattern-sd-grey-bar",
    "pattern-sd-with-small-logo-bar",
    "pattern-sd-with-large-logo-bar",
]
# What vPDQ (reference thresholds) matches among them. Not every derivative: a large logo overlay
# (chair, pattern) or letterbox bars added to an HD original (pattern-hd vs pattern-sd-*) move
# most frames more than 31 bits, and the reference matcher then scores 0-12%.
MATCH_GROUPS = [
    {"chair-19-sd-bar", "chair-20-sd-bar"},
    {"chair-22-with-large-logo-bar"},
    {"doorknob-hd-no-bar"},
    {"pattern-hd-no-bar", "pattern-longer-no-bar"},
    {"pattern-sd-grey-bar", "pattern-sd-with-small-logo-bar"},
    {"pattern-sd-with-large-logo-bar"},
]


@pytest.fixture(scope="module")
def sibling_hashes():
    return {name: vpdq_hash((VIDEOS / f"{name}.mp4").read_bytes(), fps=30, frame_size=128) for name in SIBLINGS}


def test_downscaled_hashes_agree_with_the_128x128_reference(sibling_hashes):
    for name, ours in sibling_hashes.items():
        assert_agrees(ours, reference(f"{name}-128x128"))


def test_siblings_match_and_subjects_do_not(sibling_hashes):
    group = {name: i for i, members in enumerate(MATCH_GROUPS) for name in members}
    for query in SIBLINGS:
        for banked in SIBLINGS:
            query_percent, banked_percent = match(sibling_hashes[query], sibling_hashes[banked])
            if query.split("-")[0] != banked.split("-")[0]:
                assert query_percent == banked_percent == 0, (query, banked)
            assert is_match(query_percent, banked_percent) == (group[query] == group[banked]), (
                query, banked, query_percent, banked_percent,
            )


def test_subject_matches_across_sampling_rates(sibling_hashes):
    """A banked video hashed at 1 frame a second is still covered by a densely hashed query."""
    query = sibling_hashes["chair-19-sd-bar"]
    banked = [f for f in sibling_hashes["chair-20-sd-bar"] if f.frame_number % 30 == 0]
    assert is_match(*match(query, banked))


# What the service's video signals find together, at its sampling (1 frame a second banked, 3 a
# second for a query) and served thresholds, with the packaged descriptor: every derivative of
# one subject matches each of its siblings, and no two subjects match. vpdq (the reference's
# rule) joins only part of the chair family; video_embedding's grayscale frames and their corner
# regions, aligned in time, join the rest: the large-logo derivatives (a clean corner), the
# chair-19 cut, the HD pattern original with its SD copies with bars, and the sepia copy.
FAMILIES = {
    "chair": ["chair-19-sd-bar", "chair-20-sd-bar", "chair-22-sd-grey-bar", "chair-22-sd-sepia-bar",
              "chair-22-with-large-logo-bar", "chair-22-with-small-logo-bar", "chair-orig-22-sd-bar"],
    "pattern": ["pattern-hd-no-bar", "pattern-longer-no-bar", "pattern-sd-grey-bar", "pattern-sd-with-large-logo-bar",
                "pattern-sd-with-small-logo-bar"],
}


@pytest.fixture(scope="module")
def service_values():
    """Every sample video's values as the service computes them: (banked, as a query)."""
    from mediamatch.platform.models.registry import default_model_dir, load_from_dir
    from mediamatch.platform.signals.image_embedding import ImageEmbedding
    from mediamatch.platform.signals.video_embedding import VideoEmbedding

    types = [VPDQ(), VideoEmbedding(ImageEmbedding(load_from_dir(default_model_dir())))]
    limits = LimitSettings(max_upload_bytes=10**9)
    values = {}
    for path in sorted(VIDEOS.glob("*.mp4")):
        data = path.read_bytes()
        values[path.stem] = {t.name: (t.compute(data, limits).value, t.compute_query(data, limits).value) for t in types}
    return types, values


def test_service_video_signals_join_every_derivative_and_keep_subjects_apart(service_values):
    types, values = service_values

    def found_by(query: str, banked: str) -> set[str]:
        return {t.name for t in types if t.distance(values[query][t.name][1], values[banked][t.name][0]) <= t.default_threshold}

    names = sorted(values)
    for query in names:
        for banked in names:
            if query.split("-")[0] != banked.split("-")[0]:
                assert not found_by(query, banked), (query, banked)
    for family in FAMILIES.values():
        for query in family:
            for banked in family:
                assert found_by(query, banked), (query, banked)
    assert found_by("chair-22-with-large-logo-bar", "chair-orig-22-sd-bar") == {"video_embedding"}  # a corner region
    assert found_by("pattern-hd-no-bar", "pattern-sd-grey-bar") == {"video_embedding"}


def test_video_embedding_rows_are_regions_and_flat_regions_match_nothing(service_values):
    from mediamatch.platform.signals.video_embedding import REGIONS

    types, values = service_values
    embedding = types[1]
    banked, query = values["chair-orig-22-sd-bar"]["video_embedding"]
    (vectors, times), (_, query_times) = embedding.frames(banked), embedding.frames(query)
    assert vectors.shape == (len(times), REGIONS, 256)
    assert len(query_times) >= 2.5 * len(times)  # a query is sampled three times as densely
    rows, owner, row_times = embedding.rows([banked])
    assert len(rows) == len(owner) == len(row_times) == REGIONS * len(times)
    black = embedding.serialize(np.zeros((2 * REGIONS, 256), np.float32), np.array([0.0, 1.0], np.float32))
    assert embedding.distance(black, black) == 1.0  # a black video matches nothing, not even itself
    assert embedding.distance(query, banked) == 0.0
    v1 = "ve1:2:" + base64.b64encode(vectors[:2, 0].astype("<f2").tobytes()).decode() + ":" + base64.b64encode(times[:2].tobytes()).decode()
    assert embedding.rows([v1])[0].shape == (2 * REGIONS, 256)  # an earlier version's stored value still reads
    with pytest.raises(InvalidInput, match="ve2"):
        embedding.parse(v1)  # but a client sends the current form
    assert embedding.score(0.0) == 1.0 and embedding.score(0.25) == 0.75 and embedding.score(1.0) == 0.0  # ranks partial matches


# ---------------------------------------------------------------- matching rules


def frame(pdq_hex: str, quality: int = 100, t: float = 0.0) -> VideoFrameHash:
    return VideoFrameHash(pdq_hex, quality, t)


def flip(pdq_hex: str, bits: int) -> str:
    return f"{int(pdq_hex, 16) ^ ((1 << bits) - 1):064x}"


A = "e271017837246aaccddea259648fb7d62f435c89d9e99b2497763e216c8d055c"
B = "4cd946d9673cb325b92be90b0bdacad377a6102dbf6986d4cc956ce40034bd52"


def test_match_counts_unique_good_frames_within_31_bits():
    assert match([frame(A)], [frame(flip(A, 31))]) == (100.0, 100.0)
    assert match([frame(A)], [frame(flip(A, 32))]) == (0.0, 0.0)
    # repeats count once; low-quality frames take no part
    query = [frame(A), frame(A), frame(A), frame(B, quality=49)]
    banked = [frame(A), frame(B)]
    assert match(query, banked) == (100.0, 50.0)
    assert match([frame(A, quality=10)], banked) == (0.0, 0.0)
    assert is_match(0.0, 80.0) and not is_match(100.0, 79.9) and not is_match(10.0, 90.0, query_threshold=20)


def test_dedupe():
    frames = [frame(A), frame(A, t=1), frame(flip(A, 3), t=2), frame(B, t=3)]
    assert dedupe(frames) == [frames[0], frames[2], frames[3]]
    assert dedupe(frames, distance=4) == [frames[0], frames[3]]


# ---------------------------------------------------------------- the signal type

DOORKNOB = VIDEOS / "doorknob-hd-no-bar.mp4"


@pytest.fixture(scope="module")
def doorknob_signal():
    return VPDQ().compute(DOORKNOB.read_bytes(), LimitSettings(video_fps=5))


def test_signal_value_round_trips(doorknob_signal):
    vpdq = VPDQ()
    value = doorknob_signal.value
    assert vpdq.parse(value) == value
    frames = vpdq.frames(value)
    assert 0 < doorknob_signal.quality < 100  # share of frames good enough to match; half of these are dark
    good = [f for f in frames if f.quality >= 50]
    rows = vpdq.encode([value])
    assert rows.dtype == np.uint8 and rows.shape == (len(good), 32) and rows[0].tobytes().hex() == good[0].pdq_hex
    rows2, owner, _ = vpdq.rows([value, value])
    assert len(rows2) == 2 * len(good) and owner.tolist() == [0] * len(good) + [1] * len(good)
    assert vpdq.distance(value, value) == 0 and vpdq.score(0) == 1.0
    other = vpdq.serialize([frame(B)])
    assert vpdq.distance(value, other) == 100 and vpdq.score(100) == 0.0


def test_parse_is_strict_and_canonical():
    vpdq = VPDQ()
    assert vpdq.parse(f"{A.upper()}:100:0,{A}:100:1.5,{B}:7:2.25") == f"{A}:100:0.000,{B}:7:2.250"
    bad = [
        None, 42, "", [A], f"{A}:100", f"{A}:100:0:1", f"{A[:-1]}:100:0", f"{A[:-1]}g:100:0", f"{A}:101:0",
        f"{A}:-1:0", f"{A}:100:-1", f"{A}:100:0.1234", f"{A}:100:nan", f"{A}:100:1,{B}:100:1", f"{A}:100:0,",
    ]
    for value in bad:
        with pytest.raises(InvalidInput):
            vpdq.parse(value)
    with pytest.raises(InvalidInput, match="frame 1"):
        vpdq.parse(f"{A}:100:2,{B}:100:1")


def test_all_dark_video_gives_no_value(monkeypatch):
    monkeypatch.setattr(video, "vpdq_hash", lambda *a, **k: [VideoFrameHash(A, 10, 0.0, 0)])
    signal = VPDQ().compute(b"video")
    assert signal.value is None and signal.quality == 0 and "quality" in signal.reason


# ---------------------------------------------------------------- limits and bad media


def test_too_long_video():
    data = DOORKNOB.read_bytes()  # 4 s
    with pytest.raises(TooLarge, match="limit of 2 s"):
        vpdq_hash(data, max_seconds=2)


def test_too_long_video_without_a_declared_duration(monkeypatch):
    monkeypatch.setattr(video, "_duration_seconds", lambda container, stream: None)
    with pytest.raises(TooLarge, match="2 s"):
        list(decode_frames(DOORKNOB.read_bytes(), max_seconds=2))


def test_size_limits():
    data = DOORKNOB.read_bytes()
    with pytest.raises(TooLarge, match="1280x720 pixels"):
        vpdq_hash(data, max_pixels=1000)
    with pytest.raises(TooLarge, match="bytes"):
        VPDQ().compute(data, LimitSettings(max_upload_bytes=1000))


def wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\0" * 1600)
    return out.getvalue()


@pytest.mark.parametrize(
    "data, message",
    [
        (b"definitely not a video" * 20, "not a decodable video"),
        (b"", "not a decodable video"),
        ((CONFORMANCE / "pdq" / "data" / "bridge-mods" / "aaa-orig.jpg").read_bytes(), "still image"),
        (wav(), "no video stream in the wav file"),
        (DOORKNOB.read_bytes()[:2000], "not a decodable video"),
    ],
    ids=["garbage", "empty", "jpeg", "wav", "truncated"],
)
def test_undecodable_media(data, message):
    with pytest.raises(UnsupportedMedia, match=message):
        vpdq_hash(data)
    with pytest.raises(UnsupportedMedia):
        VPDQ().compute(data)
