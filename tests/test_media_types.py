"""Video and audio through the HTTP API: banking, matching copies, reindexing, posts."""

from __future__ import annotations

import io
import shutil
import subprocess
import time

import av
import numpy as np
import pytest

from conftest import CONFORMANCE
from mediamatch.platform.errors import InvalidInput, MediaMismatch
from mediamatch.platform.media import sniff_content_type, upload_content_type

VIDEOS = CONFORMANCE / "tmk" / "sample-videos"


def upload(service, path: str, data: bytes, name: str, team: str = "admin", **fields) -> dict:
    return service.ok("POST", path, team, files={"file": (name, data)}, data=fields)


def test_video_copies_match_by_vpdq_and_md5(service):
    service.ok("POST", "/v1/banks", json={"name": "videos", "labels": ["test-video"]})
    grey = (VIDEOS / "pattern-sd-grey-bar.mp4").read_bytes()
    entry = upload(service, "/v1/banks/videos/entries", grey, "grey.mp4")
    assert entry["content_type"] == "video" and {"vpdq", "video_embedding", "md5"} <= set(entry["signals"])
    upload(service, "/v1/banks/videos/entries", (VIDEOS / "doorknob-hd-no-bar.mp4").read_bytes(), "door.mp4")

    same = upload(service, "/v1/match", grey, "same.mp4", banks="videos")
    found = {(m["signal_type"], m["distance"]) for m in same["matches"] if m["entry_id"] == entry["entry_id"]}
    assert found == {("vpdq", 0.0), ("video_embedding", 0.0), ("md5", 0.0)}
    logo = upload(service, "/v1/match", (VIDEOS / "pattern-sd-with-small-logo-bar.mp4").read_bytes(), "logo.mp4", banks="videos")
    assert {m["entry_id"] for m in logo["matches"]} == {entry["entry_id"]}  # by its frames, not by its bytes
    (hit,) = [m for m in logo["matches"] if m["signal_type"] == "vpdq"]
    assert hit["labels"] == ["test-video"] and "md5" not in {m["signal_type"] for m in logo["matches"]}
    assert hit["distance"] <= hit["threshold"] == 20 and hit["score"] >= 0.8
    large = upload(service, "/v1/match", (VIDEOS / "pattern-sd-with-large-logo-bar.mp4").read_bytes(), "large.mp4", banks="videos")
    (hit,) = large["matches"]  # vpdq misses it (most frames move > 31 bits); a clean corner of each frame does not
    assert (hit["entry_id"], hit["signal_type"]) == (entry["entry_id"], "video_embedding")
    assert hit["distance"] <= hit["threshold"] == 0.5 and hit["score"] == pytest.approx(1 - hit["distance"])
    other = upload(service, "/v1/match", (VIDEOS / "test-padded-dimensions.mp4").read_bytes(), "other.mp4", banks="videos")
    assert other["matches"] == []
    assert other["content_type"] == "video"

    post = service.ok("POST", "/v1/match", json={"post": {"text": "watch this", "parts": [{"signals": {"vpdq": entry["signals"]["vpdq"]}}]}})
    assert post["verdict"] == {"matched": True, "parts": ["parts[0]"]}

    job = service.ok("POST", "/v1/reindex", json={"signal_types": ["vpdq"]})["job_id"]
    deadline = time.time() + 120
    while (state := service.ok("GET", f"/v1/reindex/{job}"))["state"] not in ("succeeded", "failed"):
        assert time.time() < deadline
        time.sleep(0.5)
    assert state["state"] == "succeeded", state["error"]
    index = service.ok("GET", "/v1/indexes")["vpdq"]
    assert index["count"] >= 2 and index["params"]["type"] == "binary_flat"
    deadline = time.time() + 30
    while (result := upload(service, "/v1/match", (VIDEOS / "pattern-sd-with-small-logo-bar.mp4").read_bytes(), "logo.mp4", banks="videos"))["index_versions"]["vpdq"] != state["version"]:
        assert time.time() < deadline, "the searchers never loaded the new version"
        time.sleep(0.3)
    assert {m["entry_id"] for m in result["matches"] if m["signal_type"] == "vpdq"} == {entry["entry_id"]}  # now from the published shard
    service.ok("PATCH", f"/v1/banks/videos/entries/{entry['entry_id']}", json={"enabled": False})
    assert upload(service, "/v1/match", grey, "same.mp4", banks="videos")["matches"] == []


def test_bad_video_and_audio_get_precise_errors(service):
    broken = service.call("POST", "/v1/hash", files={"file": ("x.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 500)}, data={"content_type": "video"})
    assert broken.status_code == 422 and broken.json()["error"]["code"] == "media_mismatch"  # declared video, no frame decodes
    silence = service.call("POST", "/v1/hash", files={"file": ("x.wav", wav(np.zeros(8000 * 3)))}, data={"content_type": "audio"})
    assert silence.status_code == 200 and silence.json()["signals"].get("audio_fingerprint") is None


def test_sniffing_takes_a_stream_only_when_a_frame_of_it_decodes():
    assert sniff_content_type((VIDEOS / "chair-19-sd-bar.mp4").read_bytes()) == "video"
    assert sniff_content_type(wav(np.zeros(8000))) == "audio"  # silence is audio all the same
    assert sniff_content_type(b"\x04") == "text"  # FFmpeg opens this byte as 'ea_cdata' audio with no frame


def test_mislabelled_uploads_fail_closed_over_http(service):
    """Declared by the part's media type, the `content_type` field or the extension, an upload
    whose bytes are not of that type is refused (422 media_mismatch) on hashing, matching and
    banking, and nothing is banked; bytes of the declared type pass; undeclared ones are sniffed."""
    service.ok("POST", "/v1/banks", json={"name": "declared"})
    media = media_of_each_type()
    text = (b"a" * 49 + b"\n") * 11  # the issue's case: 550 bytes of ASCII as x.jpg, image/jpeg
    issue = service.call("POST", "/v1/match", files={"file": ("x.jpg", text, "image/jpeg")})
    assert (issue.status_code, issue.json()["error"]["code"]) == (422, "media_mismatch"), issue.text
    for declared, (data, name) in media.items():
        wrong = media["text"][0] if declared != "text" else media["photo"][0]
        for files, fields in (({"file": ("upload", wrong, MEDIA_TYPE_OF[declared])}, {}),
                              ({"file": ("upload", wrong)}, {"content_type": declared}),
                              ({"file": (name, wrong)}, {})):
            for path in ("/v1/hash", "/v1/match", "/v1/banks/declared/entries"):
                refused = service.call("POST", path, files=files, data=fields)
                assert (refused.status_code, refused.json()["error"]["code"]) == (422, "media_mismatch"), (declared, path, refused.text)
        hashed = service.ok("POST", "/v1/hash", files={"file": ("upload", data, MEDIA_TYPE_OF[declared])})
        assert hashed["content_type"] == declared
        assert service.ok("POST", "/v1/hash", files={"file": ("upload", data, "application/octet-stream")})["content_type"] == declared  # sniffed
    assert service.ok("GET", "/v1/banks/declared")["entry_count"] == 0
    banked = service.call("POST", "/v1/banks/declared/entries", files={"file": ("x.jpg", media["photo"][0], "image/jpeg")})
    assert banked.status_code == 201 and banked.json()["content_type"] == "photo"


def media_of_each_type() -> dict[str, tuple[bytes, str]]:
    """Real bytes of each uploadable content type, with a file name of that type."""
    from PIL import Image

    photo = io.BytesIO()
    Image.effect_mandelbrot((96, 64), (-2, -1.2, 1, 1.2), 60).convert("RGB").save(photo, "JPEG")
    return {
        "photo": (photo.getvalue(), "x.jpg"),
        "video": ((VIDEOS / "test-padded-dimensions.mp4").read_bytes(), "x.avi"),
        "audio": (wav(np.sin(np.arange(8000) / 5)), "x.wav"),
        "text": (b"550 bytes of ASCII text, or near enough, uploaded as something else. " * 8, "x.txt"),
    }


DECODES_AS_BOTH = {("audio", "video"), ("text", "audio")}  # a video's sound track is audio; a WAV of low samples can be valid UTF-8
MEDIA_TYPE_OF = {"photo": "image/jpeg", "video": "video/x-msvideo", "audio": "audio/wav", "text": "text/plain"}


@pytest.mark.parametrize("declared", ["photo", "video", "audio", "text"])
def test_declared_media_types_are_checked_against_the_bytes(declared):
    media = media_of_each_type()
    data, name = media[declared]
    assert upload_content_type(data, name) == declared  # by the extension
    assert upload_content_type(data, "upload", media_type=MEDIA_TYPE_OF[declared]) == declared  # by the part's media type
    assert upload_content_type(data, "upload.bin", "application/octet-stream", declared=declared) == declared  # by the field
    for other, (bytes_, _) in media.items():
        if other == declared or (declared, other) in DECODES_AS_BOTH:
            continue
        for ways in ({"filename": name}, {"media_type": MEDIA_TYPE_OF[declared]}, {"declared": declared}):
            with pytest.raises(MediaMismatch, match=f"declared {declared} by its .*read as {other}"):
                upload_content_type(bytes_, **ways)


def test_the_field_comes_first_then_the_media_type_then_the_extension():
    media = media_of_each_type()
    text, photo = media["text"][0], media["photo"][0]
    assert upload_content_type(text, "x.jpg", "image/jpeg", declared="text") == "text"
    assert upload_content_type(photo, "x.txt", "image/jpeg") == "photo"
    with pytest.raises(MediaMismatch, match="media type image/jpeg"):
        upload_content_type(text, "x.txt", "image/jpeg")
    with pytest.raises(InvalidInput, match="content_type must be one of"):
        upload_content_type(text, declared="post")


def test_mislabelled_ascii_is_refused_as_a_photo():
    """The issue's case: 550 bytes of ASCII uploaded as x.jpg, image/jpeg."""
    text = (b"a" * 49 + b"\n") * 11
    for ways in ({"filename": "x.jpg"}, {"media_type": "image/jpeg"}, {"filename": "x.jpg", "media_type": "image/jpeg"}):
        with pytest.raises(MediaMismatch) as refused:
            upload_content_type(text, **ways)
        assert (refused.value.status, refused.value.code) == (422, "media_mismatch")


def test_nothing_declared_is_sniffed():
    media = media_of_each_type()
    for kind, (data, _) in media.items():
        for name, media_type in (("", None), ("upload", "application/octet-stream"), ("x.unknown", "")):
            assert upload_content_type(data, name, media_type) == kind
    assert upload_content_type(media["video"][0], "x.mp4") == "video"  # .mp4: video or audio, whichever it holds
    assert upload_content_type(mp3(media["audio"][0])[:100_000], "x.mp4") == "audio"
    with pytest.raises(InvalidInput) as refused:
        upload_content_type(b"\xff\xfe\x00garbage\x80", "upload")
    assert refused.value.code == "unsupported_media"


def wav(samples: np.ndarray, rate: int = 8000) -> bytes:
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32000).astype("<i2").tobytes())
    return out.getvalue()


def speech(text: str) -> bytes:
    return subprocess.run(["espeak-ng", "-s", "170", "--stdout", text], capture_output=True, check=True).stdout


def mp3(data: bytes, speed: float = 1.0) -> bytes:
    """`data` re-encoded as MP3, optionally played `speed` times faster (pitch and tempo, as a resampler does)."""
    out = io.BytesIO()
    with av.open(io.BytesIO(data)) as source, av.open(out, "w", format="mp3") as sink:
        rate = source.streams.audio[0].rate
        stream = sink.add_stream("libmp3lame", rate=22050)
        resampler = av.AudioResampler(format="s16p", layout="mono", rate=22050)
        for frame in source.decode(audio=0):
            frame.pts, frame.sample_rate = None, round(rate * speed)  # played faster: the same samples at a higher rate
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):
                    sink.mux(packet)
        for packet in stream.encode(None):
            sink.mux(packet)
    return out.getvalue()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (make test installs it with apt when root)")
def test_audio_copies_match_by_fingerprint(service, text_corpus):
    texts = [" ".join(text_corpus[i].split()[:70]) for i in (100, 200, 300)]
    service.ok("POST", "/v1/banks", json={"name": "audio"})
    banked = speech(texts[0])
    entry = upload(service, "/v1/banks/audio/entries", banked, "speech.wav")
    assert entry["content_type"] == "audio" and {"audio_fingerprint", "md5"} <= set(entry["signals"])
    upload(service, "/v1/banks/audio/entries", speech(texts[1]), "other.wav")
    for copy in (mp3(banked), mp3(banked, speed=1.05)):
        result = upload(service, "/v1/match", copy, "copy.mp3", banks="audio")
        hits = [m for m in result["matches"] if m["signal_type"] == "audio_fingerprint"]
        assert [m["entry_id"] for m in hits][:1] == [entry["entry_id"]], hits
    unrelated = upload(service, "/v1/match", mp3(speech(texts[2])), "unrelated.mp3", banks="audio")
    assert all(m["entry_id"] != entry["entry_id"] or m["distance"] > 0.5 for m in unrelated["matches"])
