"""Session fixtures: one Ray instance, one moto S3 server on 127.0.0.1, and real test media."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

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
    ray.init(
        num_cpus=2,
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
                 "immunohistochemistry", "retina", "clock", "grass", "gravel", "brick", "cat", "cell"):
        array = getattr(skimage.data, name)()
        if array.dtype != np.uint8:
            array = (array > 0).astype(np.uint8) * 255 if array.dtype == bool else array.astype(np.uint8)
        images.append(Image.fromarray(array).convert("RGB"))
    return [im for im in images if min(im.size) >= 100]


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
