"""Throughput of the image signals: images embedded per second (per CPU core, and on a GPU when
torch sees one) by the packaged descriptor, against PDQ hashing of the same images in the same
run as the baseline.

    python benchmarks/bench_descriptor.py [--images 256] [--batch 64] [--repeats 5]

Images: the PDQ conformance photos and scikit-image's samples, JPEG-encoded, so each figure
includes decoding as the service does it. Medians of --repeats runs.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from mediamatch.platform.signals import get_signal_type

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance"


def photos(count: int) -> list[bytes]:
    import skimage.data

    sources = [Image.open(p).convert("RGB") for p in sorted((CONFORMANCE / "pdq" / "data").rglob("*.jpg"))]
    sources += [Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in ("astronaut", "coffee", "chelsea", "rocket")]
    out = []
    for i in range(count):
        buffer = io.BytesIO()
        image = sources[i % len(sources)].copy()
        image.thumbnail((640, 640))
        image.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def rate(fn, items: list[bytes], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(items)
        times.append(time.perf_counter() - start)
    return len(items) / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    items = photos(args.images)
    embedding, pdq = get_signal_type("image_embedding"), get_signal_type("pdq")
    descriptor = embedding.descriptor
    print(f"model {descriptor.config.version}: {sum(p.numel() for p in descriptor.model.parameters()) / 1e6:.2f} M parameters, "
          f"input {descriptor.config.input_size} px, device {descriptor.device}")
    rows = []
    for threads in sorted({1, torch.get_num_threads()}):
        torch.set_num_threads(threads)
        embed = rate(lambda xs: [embedding.compute_batch(xs[i : i + args.batch]) for i in range(0, len(xs), args.batch)], items, args.repeats)
        rows.append((f"image_embedding, {threads} thread(s)", embed, embed / threads))
    hashed = rate(lambda xs: [pdq.compute(x) for x in xs], items, args.repeats)
    rows.append(("pdq (baseline), 1 thread", hashed, hashed))
    print("| signal | images/s | per core |\n|---|---|---|")
    for name, total, per_core in rows:
        print(f"| {name} | {total:.0f} | {per_core:.0f} |")
    print(f"image_embedding / pdq, 1 thread: {rows[0][1] / hashed:.2f}x")


if __name__ == "__main__":
    main()
