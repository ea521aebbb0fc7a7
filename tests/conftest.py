"""Session fixtures: one Ray instance, one moto S3 server on 127.0.0.1, and real test media."""

from __future__ import annotations

import io
import itertools
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

# Credentials for the local moto server; set before Ray starts so its workers inherit them.
for _key, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
}.items():
    os.environ.setdefault(_key, _value)

from mediamatch.platform.storage import ObjectStore  # noqa: E402

# ../shared/conformance beside the checkout (CI clones main with shared/ beside it)
CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance"


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # workers import test modules too (test-only classes such as the fault-injecting store travel by pickle)
    tests = os.path.dirname(os.path.abspath(__file__))
    # the service's default data plane, as `mediamatch serve` starts it (Serve reads it from the environment Ray starts with)
    from mediamatch.deployments.app import data_plane_env
    from mediamatch.platform.settings import Settings

    os.environ.update(data_plane_env(Settings(storage="unused").serve.data_plane))
    ray.init(
        num_cpus=4,  # logical: Serve replicas take fractions and mostly wait; reindex tasks need whole CPUs beside them
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": tests}},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto's standalone server) on loopback, for the whole session."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


def new_s3_store(endpoint: str) -> ObjectStore:
    import boto3

    bucket = f"mm-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return ObjectStore(f"s3://{bucket}/data", endpoint=endpoint)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ObjectStore:
    """Each test that takes `store` runs on a local directory and on S3."""
    if request.param == "local":
        return ObjectStore(str(tmp_path / "store"))
    return new_s3_store(request.getfixturevalue("s3_endpoint"))


@pytest.fixture
def local_store(tmp_path) -> ObjectStore:
    return ObjectStore(str(tmp_path / "store"))


# -- media ------------------------------------------------------------------------------------
def source_photos() -> list:
    """Real photos nobody on this project made: the conformance set and scikit-image's samples."""
    import numpy as np
    import skimage.data
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in sorted((CONFORMANCE / "pdq" / "data").rglob("*.jpg"))]
    for name in ("astronaut", "camera", "coffee", "chelsea", "coins", "moon", "rocket", "horse", "hubble_deep_field",
                 "immunohistochemistry", "retina", "clock", "grass", "gravel", "brick", "cat", "cell", "page", "text",
                 "stereo_motorcycle", "microaneurysms"):
        array = getattr(skimage.data, name)()
        array = array[0] if isinstance(array, tuple) else array  # a stereo pair: its left view
        if array.dtype != np.uint8:
            array = (array > 0).astype(np.uint8) * 255 if array.dtype == bool else array.astype(np.uint8)
        images.append(Image.fromarray(array).convert("RGB"))
    return [im for im in images if min(im.size) >= 100]


@pytest.fixture(scope="module")
def photos() -> list:
    """24 or more real photos of distinct scenes, at most 256 px (the conformance set holds edits
    of one photo, flipped and turned among them: one of them)."""
    from mediamatch.platform.evaluation.photo import closest, picture_hashes

    kept, hashes = [], []
    for image in source_photos():
        image.thumbnail((256, 256))
        variants = picture_hashes(image)
        if variants[0] and closest(variants, hashes) > 80:
            kept.append(image)
            hashes.append(variants[0])
    assert len(kept) >= 24
    return kept


# Each transform a match may name (None: the photo as it is) and the PIL turn or flip that makes it.
TURNS = {None: None, "rot90": Image.Transpose.ROTATE_90, "rot180": Image.Transpose.ROTATE_180, "rot270": Image.Transpose.ROTATE_270,
         "flipx": Image.Transpose.FLIP_LEFT_RIGHT, "flipy": Image.Transpose.FLIP_TOP_BOTTOM, "transpose": Image.Transpose.TRANSPOSE,
         "transverse": Image.Transpose.TRANSVERSE}


def asymmetric(photos: list) -> list:
    """The photos none of whose turns and flips is within PDQ's threshold of it (else a turned
    copy is also a plain copy)."""
    from mediamatch.platform.signals import SIGNAL_TYPES

    pdq = SIGNAL_TYPES["pdq"]
    kept = []
    for photo in photos:
        plain, *turned = pdq.compute_query(jpeg(photo)).value.split(",")
        if min(pdq.distance(plain, form) for form in turned) > pdq.default_threshold:
            kept.append(photo)
    return kept


def jpeg(image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture(scope="session")
def photo_corpus() -> list[bytes]:
    """1,000 distinct photos: seeded random crops of the real source photos, as JPEG, each
    with enough detail for a PDQ hash (quality >= 50)."""
    import numpy as np

    from mediamatch.platform.signals import SIGNAL_TYPES

    rng = np.random.default_rng(7)
    sources = source_photos()
    photos = []
    while len(photos) < 1000:
        image = sources[int(rng.integers(len(sources)))]
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.3, 0.8)), int(h * rng.uniform(0.3, 0.8))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        photo = jpeg(image.crop((x, y, x + cw, y + ch)).resize((160, 160)))
        if SIGNAL_TYPES["pdq"].compute(photo).value is not None:
            photos.append(photo)
    return photos


@pytest.fixture(scope="session")
def text_corpus() -> list[str]:
    """1,000 distinct real texts: docstrings of the Python standard library."""
    import importlib
    import inspect
    import pkgutil
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)

    texts, seen = [], set()
    for module_info in sorted(pkgutil.iter_modules(), key=lambda m: m.name):
        if module_info.name.startswith("_") or module_info.name in ("antigravity", "this") or module_info.module_finder.path != os.path.dirname(os.__file__):
            continue
        try:
            module = importlib.import_module(module_info.name)
        except Exception:
            continue
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj) or ""
            paragraph = doc.split("\n\n")[0].strip()
            if 60 <= len(paragraph) <= 1000 and paragraph not in seen:
                seen.add(paragraph)
                texts.append(paragraph)
        if len(texts) >= 1000:
            return texts[:1000]
    raise RuntimeError(f"only {len(texts)} texts found")


OPENCLIPART = Path("/usr/share/openclipart")


@pytest.fixture(scope="session")
def real_photos() -> list[bytes]:
    if not OPENCLIPART.is_dir():
        pytest.skip("Debian's openclipart-png is not installed (`make test` installs it where apt-get can)")
    return load_real_photos(400)


def load_real_photos(count: int) -> list[bytes]:
    """`count` unrelated real images as JPEG (at most 512 px), each with a PDQ hash more than 63
    bits from every other's in any of its turns and flips (a mirrored drawing is a copy): the conformance photos, scikit-image's samples, then a seeded draw
    of Debian's openclipart-png drawings (flattened onto white)."""
    import random

    from mediamatch.platform.signals import SIGNAL_TYPES

    pdq = SIGNAL_TYPES["pdq"]
    drawings = sorted(OPENCLIPART.rglob("*.png"))
    random.Random(3).shuffle(drawings)
    photos, hashes = [], []
    for image in itertools.chain(source_photos(), (_flatten(p) for p in drawings)):
        if image is None:
            continue
        image.thumbnail((512, 512))
        photo = jpeg(image)
        forms = pdq.compute_query(photo).value  # its 8 turns and flips, the plain hash first, as a match searches them
        if forms is not None and all(pdq.distance(forms, h) > 63 for h in hashes):  # the conformance set holds edits of one photo
            hashes.append(pdq.shown(forms))
            photos.append(photo)
        if len(photos) == count:
            return photos
    raise RuntimeError(f"only {len(photos)} usable photos")


def _flatten(path: Path):
    """A drawing on white, or None when it is huge or mostly background (line art hashes poorly)."""
    import numpy as np

    from mediamatch.platform.errors import MediamatchError
    from mediamatch.platform.media import open_image

    try:
        flat = open_image(path.read_bytes(), 16_000_000)
    except MediamatchError:
        return None
    flat.thumbnail((512, 512))
    return flat if (np.asarray(flat.convert("L")) > 245).mean() <= MAX_BACKGROUND else None


MAX_BACKGROUND = 0.5


# -- the match service --------------------------------------------------------------------------
class Service:
    """The Serve application on loopback, and HTTP helpers with each test team's token."""

    TOKENS = {
        "admin": {"roles": ["admin"]},
        "matcher": {"roles": ["match"]},
        "writer": {"roles": ["bank_write", "match"]},
        "team-a": {"roles": ["bank_write"], "banks": ["team-a"]},
        "matcher-a": {"roles": ["match"], "banks": ["team-a"]},
        "limited": {"roles": ["match"], "rate_per_second": 0.5, "burst": 2},
        "metered": {"roles": ["match"], "rate_per_second": 4, "burst": 4},
    }
    TOKENS_METERED = (4, 4)  # its rate per second and burst

    def __init__(self, url: str, store: ObjectStore, settings):
        import requests

        self.url, self.store, self.settings = url, store, settings
        self.http = requests.Session()

    def token(self, team: str) -> str:
        return f"test-token-{team}"

    def call(self, method: str, path: str, team: str | None = "admin", **kwargs):
        headers = kwargs.pop("headers", {})
        if team:
            headers["Authorization"] = f"Bearer {self.token(team)}"
        return self.http.request(method, self.url + path, headers=headers, timeout=120, **kwargs)

    def ok(self, method: str, path: str, team: str | None = "admin", **kwargs):
        response = self.call(method, path, team, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:300]}"
        return response.json() if response.content else None

    def wait_job(self, job_id: str, timeout: float = 300) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = self.ok("GET", f"/v1/reindex/{job_id}")
            if status["state"] in ("succeeded", "failed"):
                return status
            time.sleep(0.5)
        raise TimeoutError(f"reindex job {job_id} did not finish")

    def wait_serving(self, signal_type: str, version: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while self.ok("GET", "/v1/indexes")[signal_type]["serving"] != version:
            assert time.time() < deadline, f"{signal_type} searchers never served {version}"
            time.sleep(0.2)


@pytest.fixture(scope="session")
def service(ray_session, tmp_path_factory):
    """The whole application (ingress, hasher, embedder, a searcher per signal type) on a free
    loopback port over a local store, with tokens for four test teams."""
    import requests
    from ray import serve

    from mediamatch.deployments.app import build_app
    from mediamatch.platform.auth import token_digest
    from mediamatch.platform.settings import Settings

    store = ObjectStore(str(tmp_path_factory.mktemp("service") / "store"))
    tokens = [{"team": team, "token_sha256": token_digest(f"test-token-{team}"), **grant} for team, grant in Service.TOKENS.items()]
    replica = {"min_replicas": 1, "max_replicas": 1}
    settings = Settings(
        storage=store.uri,
        tokens=tokens,
        limits={"max_upload_bytes": 2_000_000, "max_image_pixels": 4_000_000, "max_text_chars": 20_000},
        serve={"poll_seconds": 0.2, **{name: replica for name in ("ingress", "hasher", "embedder", "searcher")},
               "layout": os.environ.get("MEDIAMATCH_TEST_LAYOUT", "co_located")},  # e.g. compact: the service tests under it
        index={"flat_max": 1000, "recall_queries": 50},
        loadtest_report=str(Path(__file__).resolve().parents[1] / "docs" / "loadtest"),  # the committed report, for the console
    )
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(settings), name="mediamatch", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while requests.get(url + "/readyz", timeout=10).status_code != 200:
        assert time.time() < deadline, "the service never became ready"
        time.sleep(0.5)
    yield Service(url, store, settings)
    serve.shutdown()


def wait_until(condition, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.3)


# hypothesis: short runs in `make test`, long ones in `make fuzz` (HYPOTHESIS_PROFILE=long)
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", max_examples=150, deadline=None)
_hypothesis_settings.register_profile("long", max_examples=20_000, deadline=None)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
