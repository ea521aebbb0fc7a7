"""Hostile input against the parsers: every failure is the precise error the API maps to a 4xx.

Short runs here (`make test`); `make fuzz` runs them long (hypothesis profile `long`).
"""

from __future__ import annotations

import io

import numpy as np

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from mediamatch.deployments.http import EITHER_MODELS
from mediamatch.platform.errors import InvalidInput
from mediamatch.platform.media import decode_text, open_image, sniff_content_type, upload_content_type
from mediamatch.platform.signals import SIGNAL_TYPES

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=12), inner, max_size=8),
    max_leaves=20,
)


def real_image(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.effect_mandelbrot((64, 48), (-2, -1.2, 1, 1.2), 60).convert("RGB").save(out, fmt)
    return out.getvalue()


SEEDS = [real_image("JPEG"), real_image("PNG"), real_image("GIF"), real_image("WEBP")]


@st.composite
def damaged_images(draw) -> bytes:
    """A real image file with bytes flipped, cut or inserted (decoders' favourite failures)."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:]
            if not data:
                break
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(damaged_images(), st.binary(max_size=2048)))
def test_image_decoding_fails_only_with_clean_errors(data):
    try:
        image = open_image(data, max_pixels=4_000_000)
    except InvalidInput:  # UnsupportedMedia or TooLarge: 422 / 413
        return
    assert image.mode == "RGB" and image.width * image.height <= 4_000_000
    pdq = SIGNAL_TYPES["pdq"]
    plain, turned = pdq.compute_image(image.copy()), pdq.compute_image(image, dihedral=True)  # whatever decodes also hashes
    assert (turned.value is None) == (plain.value is None) and (plain.value is None or turned.value.split(",")[0] == plain.value)


MEDIA_TYPES = st.sampled_from(["", "image/jpeg", "video/mp4", "audio/mpeg", "text/plain", "application/octet-stream"]) | st.text(max_size=30)
NAMES = st.sampled_from(["x.jpg", "x.mp4", "x.wav", "x.txt", "x"]) | st.text(max_size=20)


@given(st.binary(max_size=512), NAMES, MEDIA_TYPES, st.sampled_from([None, "photo", "video", "audio", "text", "post"]))
@example(b"\x04", "", "", None)  # FFmpeg opens this byte as a stream of 'ea_cdata' audio holding nothing
def test_sniffing_and_text_decoding(data, name, media_type, declared):
    try:
        assert sniff_content_type(data, name) in ("photo", "video", "audio", "text")
    except InvalidInput:
        pass
    try:
        assert upload_content_type(data, name, media_type, declared) in ("photo", "video", "audio", "text")
    except InvalidInput:
        pass
    try:
        assert decode_text(data, 1000).strip()
    except InvalidInput:
        pass


@given(JSON)
def test_signal_values_from_clients(value):
    for signal_type in SIGNAL_TYPES.values():
        try:
            parsed = signal_type.parse(value)
        except InvalidInput:
            continue
        signal_type.encode([parsed])  # a value that parses can be indexed


@given(st.one_of(st.text(max_size=300), JSON.map(repr), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_request_bodies(text):
    for model in EITHER_MODELS:
        try:
            model.model_validate_json(text)
        except ValidationError:
            pass


def test_schemathesis_finds_no_server_error(service, tmp_path):
    """Schemathesis generates requests for every operation of /openapi.json (a writer's token:
    admin operations answer 403); no answer may be a 5xx."""
    import os
    import subprocess
    import sys

    examples = "300" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "8"
    before = replica_rss("Ingress")
    result = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "schemathesis"), "run", f"{service.url}/openapi.json",
            "--checks", "not_a_server_error", "--max-examples", examples, "--seed", "7", "--request-timeout", "60",
            "--header", f"Authorization: Bearer {service.token('writer')}",
        ],
        capture_output=True, text=True, cwd=tmp_path, timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    grown = replica_rss("Ingress") - before
    print(f"\nschemathesis: ingress resident memory grew {grown / 2**20:.0f} MiB")
    assert grown < 512 * 2**20  # bounded: no body or decoded image is kept


def replica_rss(deployment: str) -> int:
    """Resident bytes of a deployment's replica processes (Ray titles them ray::ServeReplica:<app>:<name>)."""
    import ray  # noqa: F401  (its psutil)
    import psutil

    return sum(p.memory_info().rss for p in psutil.process_iter(["cmdline"]) if f"ServeReplica:mediamatch:{deployment}" in " ".join(p.info["cmdline"] or []))


@st.composite
def damaged_keypoints(draw) -> str:
    """A valid stored keypoints value with characters flipped, cut or inserted."""
    from mediamatch.platform import verify

    n = draw(st.integers(0, 4))
    points = np.array(draw(st.lists(st.tuples(st.floats(0, 300), st.floats(0, 512)), min_size=n, max_size=n)) or np.zeros((0, 2)), np.float32)
    value = list(verify.serialize(verify.Features(points.reshape(n, 2), np.zeros((n, 32), np.uint8), (300, 512))))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(value)))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and at < len(value):
            value[at] = draw(st.sampled_from("0123456789:+/=Akp-"))
        elif action == "cut":
            del value[at:]
        else:
            value[at:at] = draw(st.text("0123456789:+/=ABCkp", max_size=6))
    return "".join(value)


@given(st.one_of(damaged_keypoints(), st.text(max_size=200)))
def test_stored_keypoints_parse_or_fail_cleanly(value):
    from mediamatch.platform import verify

    try:
        features = verify.parse(value)
    except InvalidInput:
        return
    assert features.points.shape == (len(features), 2) and features.descriptors.shape == (len(features), 32)
    verify.fit(features, features)  # a value that parses can be verified
