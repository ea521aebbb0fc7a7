"""A photo match's latency through the service with and without geometric verification.

    nice -n 15 .venv/bin/python benchmarks/bench_photo_match.py [--n 1000] [--queries 100]

One run, one machine, one bank for both:
  0. bank N distinct photos (seeded random crops of the scikit-image and conformance photos,
     160-320 px, as JPEG) straight into a catalog in a temp dir, with every photo signal
     computed here (pdq, md5, image_embedding, keypoints), and publish every index with the
     reindex job. Untimed.
  1. the Serve application (`build_app`) with `verify.enabled` true, then false, on loopback;
  2. one client sends `--queries` edited copies of banked photos (the eval's rotate, flip+crop,
     pad, overlay and crop edits in turn) one at a time: p50/p99 of the whole request, how
     many found their original at all, through `keypoints` and by the photo decision (`fused`),
     and how many other entries the decision took.
The client runs on the same cores as the service: read the figures as relative.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import requests
from ray import serve

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from bench_serve import free_port, wait_http  # noqa: E402
from conftest import jpeg, source_photos  # noqa: E402

from mediamatch.deployments.app import build_app  # noqa: E402
from mediamatch.indexing.reindex import reindex  # noqa: E402
from mediamatch.platform.catalog import Catalog, Entry  # noqa: E402
from mediamatch.platform.models.edits import EVAL_EDITS  # noqa: E402
from mediamatch.platform.settings import Settings  # noqa: E402
from mediamatch.platform.signals import SIGNAL_TYPES  # noqa: E402
from mediamatch.platform.storage import ObjectStore  # noqa: E402

PHOTO_SIGNALS = ("pdq", "md5", "image_embedding", "keypoints")
EDITS = ("rotate", "flip+crop", "pad", "overlay", "crop")


def corpus(n: int, seed: int):
    """n distinct photos: random crops (40-90% a side) of the source photos, 160-320 px."""
    rng = random.Random(seed)
    sources = source_photos()
    out = []
    while len(out) < n:
        image = rng.choice(sources)
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.4, 0.9)), int(h * rng.uniform(0.4, 0.9))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        side = rng.randint(160, 320)
        out.append(image.crop((x, y, x + cw, y + ch)).resize((side, max(32, side * ch // cw))))
    return out


def bank(store: ObjectStore, images) -> list[str]:
    catalog = Catalog(store)
    catalog.create_bank("bench")
    embedding = SIGNAL_TYPES["image_embedding"]
    entries = []
    for start in range(0, len(images), 64):
        chunk = [jpeg(im) for im in images[start : start + 64]]
        vectors = embedding.compute_batch(chunk)
        for data, vector in zip(chunk, vectors):
            signals = {name: SIGNAL_TYPES[name].compute(data).value for name in ("pdq", "md5", "keypoints")}
            signals["image_embedding"] = vector.value
            entries.append(Entry(bank="bench", content_type="photo", media=catalog.put_media(data),
                                 signals={k: v for k, v in signals.items() if v is not None}))
        print(f"  banked {len(entries)}/{len(images)}", flush=True)
    return [e.entry_id for e in catalog.add_entries("bench", entries)]


def measure(url: str, queries: list[tuple[bytes, str]]) -> dict:
    session = requests.Session()
    match = lambda data: session.post(url + "/v1/match", files={"file": ("q.jpg", data, "image/jpeg")}, timeout=120)  # noqa: E731
    match(queries[0][0])  # warm-up
    latencies, found, verified, decided, wrong = [], 0, 0, 0, 0
    for data, entry_id in queries:
        started = time.perf_counter()
        matches = match(data).json()["matches"]
        latencies.append(time.perf_counter() - started)
        found += any(m["entry_id"] == entry_id for m in matches)
        verified += any(m["entry_id"] == entry_id and m["signal_type"] == "keypoints" for m in matches)
        decided += any(m["entry_id"] == entry_id and m["signal_type"] == "fused" for m in matches)
        wrong += sum(m["entry_id"] != entry_id and m["signal_type"] == "fused" for m in matches)
    ms = np.array(latencies) * 1000
    return {"p50_ms": round(float(np.median(ms)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "found": round(found / len(queries), 3), "through_keypoints": round(verified / len(queries), 3),
            "fused": round(decided / len(queries), 3), "fused_false": wrong}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="banked photos")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images = corpus(args.n + 20, args.seed)
    banked, pool = images[: args.n], images[args.n :]
    store = ObjectStore(tempfile.mkdtemp(prefix="bench-photo-match-"))
    started = time.perf_counter()
    ids = bank(store, banked)
    ray.init(num_cpus=None, include_dashboard=False, log_to_driver=False)
    reindex(Settings(storage=store.uri), list(PHOTO_SIGNALS), store=store)
    print(f"{args.n} photos banked and indexed in {time.perf_counter() - started:.0f} s")
    rng = random.Random(args.seed)
    picks = rng.sample(range(args.n), args.queries)
    queries = [(jpeg(EVAL_EDITS[EDITS[i % len(EDITS)]](banked[p], random.Random(p), pool)), ids[p]) for i, p in enumerate(picks)]
    results = {}
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    for verifying in (True, False):
        settings = Settings(storage=store.uri, serve={"signal_types": list(PHOTO_SIGNALS), "poll_seconds": 1.0}, verify={"enabled": verifying})
        serve.run(build_app(settings), name="mediamatch", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_http(url, "/readyz")
        while requests.get(url + "/readyz", timeout=10).status_code != 200:
            time.sleep(0.5)
        results[verifying] = measure(url, queries)
        print(f"  verification {'on ' if verifying else 'off'}: {results[verifying]}", flush=True)
        serve.delete("mediamatch")
    on, off = results[True], results[False]
    print(f"\n| {args.n} banked photos, {args.queries} edited copies ({', '.join(EDITS)}), one at a time | p50 ms | p99 ms | original found | through keypoints | by the fused decision | other entries fused |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, r in (("without verification", off), ("with verification", on)):
        print(f"| {label} | {r['p50_ms']} | {r['p99_ms']} | {r['found']} | {r['through_keypoints']} | {r['fused']} | {r['fused_false']} |")
    print(f"\nverification costs {on['p50_ms'] / off['p50_ms']:.2f}x the p50 of a photo match")
    serve.shutdown()


if __name__ == "__main__":
    main()
