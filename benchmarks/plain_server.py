"""The baseline for bench_serve.py: one process, FastAPI + faiss, doing the service's match work.

    PLAIN_DATA=bank.parquet uvicorn plain_server:app --port 8001

It loads the banked PDQ hashes (Parquet: entry_id, pdq) into the same faiss multi-hash index
the service builds (16 chunks, 1 flip: exact within 31 bits), and answers `POST /v1/match`
with the same bodies: JSON `{"signals": {"pdq": hex}}`, or a multipart photo that it decodes,
hashes (PDQ after a 512 px thumbnail, as the service does, and MD5) and looks up. Under
`/dihedral` (`POST /dihedral/v1/match`) a photo is hashed as the service hashes a query, in its
8 dihedral forms (mediamatch's own `compute_query`), and every form is looked up, each entry
answering with its nearest: the same work as the service's, without its hops.
"""

from __future__ import annotations

import hashlib
import io
import os
import time

import faiss
import numpy as np
import pdqhash
import pyarrow.parquet as pq
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from PIL import Image

from mediamatch.platform.signals import SIGNAL_TYPES

THRESHOLD = 31
table = pq.read_table(os.environ["PLAIN_DATA"])
entry_ids = table.column("entry_id").to_pylist()
codes = np.frombuffer(b"".join(bytes.fromhex(h) for h in table.column("pdq").to_pylist()), dtype=np.uint8).reshape(-1, 32)
index = faiss.IndexBinaryMultiHash(256, 16, 16)
index.nflip = 1
index.add(codes)
md5_index: dict[str, int] = {}  # the bank holds hashes only, as the service's does
del table, codes

app = FastAPI()


def photo_signals(data: bytes, dihedral: bool) -> tuple[str, str]:
    """The photo's PDQ (its 8 forms comma-separated, when `dihedral`) and MD5."""
    if dihedral:
        return SIGNAL_TYPES["pdq"].compute_query(data).value, hashlib.md5(data).hexdigest()
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.thumbnail((512, 512))
    bits, _quality = pdqhash.compute(np.ascontiguousarray(np.asarray(image)))
    return np.packbits(bits.astype(np.uint8)).tobytes().hex(), hashlib.md5(data).hexdigest()


@app.post("/v1/match")
async def match(request: Request) -> dict:
    return await answer(request, dihedral=False)


@app.post("/dihedral/v1/match")
async def match_dihedral(request: Request) -> dict:
    return await answer(request, dihedral=True)


async def answer(request: Request, dihedral: bool) -> dict:
    started = time.perf_counter()
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        pdq, md5 = await run_in_threadpool(photo_signals, await form["file"].read(), dihedral)
        signals = {"pdq": pdq, "md5": md5}
    else:
        signals = (await request.json())["signals"]
    query = np.frombuffer(bytes.fromhex(signals["pdq"].replace(",", "")), dtype=np.uint8).reshape(-1, 32)
    lims, distances, rows = await run_in_threadpool(index.range_search, query, THRESHOLD + 1)
    nearest: dict[int, int] = {}  # row -> its nearest form's distance
    for d, r in zip(distances.tolist(), rows.tolist()):
        nearest[r] = min(d, nearest.get(r, d))
    matches = [
        {"bank": "bench", "entry_id": entry_ids[r], "signal_type": "pdq", "distance": float(d), "score": 1 - d / 256,
         "threshold": THRESHOLD, "labels": ["bench"], "metadata": {}, "part": None}
        for r, d in sorted(nearest.items(), key=lambda item: item[1])
    ]
    if "md5" in signals and signals["md5"] in md5_index:
        matches.append({"bank": "bench", "entry_id": entry_ids[md5_index[signals["md5"]]], "signal_type": "md5", "distance": 0.0})
    return {"content_type": "photo", "signals": signals, "matches": matches, "took_ms": (time.perf_counter() - started) * 1000}
