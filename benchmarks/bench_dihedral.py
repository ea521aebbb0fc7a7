"""Dihedral PDQ: what hashing a query photo in its 8 turns and flips costs against one plain
hash, and how close each way's forms come to the banked photo's hash.

    python benchmarks/bench_dihedral.py [--side 512] [--repeats 9]

Ways: `pdqhash.compute` (one plain hash, the baseline), `pdqhash.compute_dihedral` (one pass,
the 8 forms derived from one DCT), pdq's `compute_query` (the service's: compute_dihedral on
the photo and on three flips of its pixels, the plain and the transposed form of each) and 8
plain hashes of the photo turned in pixels. Photos: the PDQ conformance photos and scikit-image's
samples, scaled to at most --side pixels and JPEG-encoded; each is banked plain, and each turn or
flip of it (JPEG quality 80) is a query: the table gives the bits between the banked hash and
the query form that undoes the turn (the threshold is 31). Times: medians of --repeats runs
over every photo, decoded pixels in, hashes out. Lookup: the photos' queries against --bank
random banked hashes (plus the photos) in the multi-hash index a published PDQ shard uses
(`Shard.search`, radius 31), the plain hash alone against all 8 forms.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
import pdqhash
from PIL import Image

from tables import print_table

from mediamatch.platform.index import Shard, choose_params
from mediamatch.platform.settings import IndexSettings
from mediamatch.platform.signals import get_signal_type
from mediamatch.platform.signals.hashes import DIHEDRAL_TRANSFORMS

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance"
T = Image.Transpose
TURNS = {"rot90": T.ROTATE_90, "rot180": T.ROTATE_180, "rot270": T.ROTATE_270, "flipx": T.FLIP_LEFT_RIGHT,
         "flipy": T.FLIP_TOP_BOTTOM, "transpose": T.TRANSPOSE, "transverse": T.TRANSVERSE}
UNDO = {**TURNS, "rot90": T.ROTATE_270, "rot270": T.ROTATE_90}  # the turn back (flips undo themselves)
# compute_dihedral's order: the image, turned 90/180/270 degrees counterclockwise, upside down,
# mirrored left-right, transposed, transversed; the form that undoes each turn of the query
ONE_PASS = {"rot90": 3, "rot180": 2, "rot270": 1, "flipx": 5, "flipy": 4, "transpose": 6, "transverse": 7}


def photos(side: int) -> list[Image.Image]:
    import skimage.data

    images = [Image.open(p).convert("RGB") for p in sorted((CONFORMANCE / "pdq" / "data").rglob("*.jpg"))]
    for name in ("astronaut", "camera", "coffee", "chelsea", "coins", "moon", "rocket", "horse", "retina", "clock", "grass",
                 "gravel", "brick", "cat", "page", "text", "immunohistochemistry"):
        images.append(Image.fromarray(getattr(skimage.data, name)()).convert("RGB"))
    for image in images:
        image.thumbnail((side, side))
    return images


def jpeg(image: Image.Image, quality: int = 90) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def pixels(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image))


def hex_of(bits: np.ndarray) -> str:
    return np.packbits(bits.astype(np.uint8)).tobytes().hex()


def median_seconds(fn, images: list[Image.Image], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for image in images:
            fn(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--bank", type=int, default=1_000_000)
    args = parser.parse_args()
    pdq = get_signal_type("pdq")
    images = [jpeg(im) for im in photos(args.side)]
    ways = {
        "pdqhash.compute (1 plain hash)": lambda im: pdqhash.compute(pixels(im)),
        "pdqhash.compute_dihedral (1 pass)": lambda im: pdqhash.compute_dihedral(pixels(im)),
        "compute_query (4 compute_dihedral passes)": lambda im: pdq.compute_image(im, dihedral=True),
        "8 x pdqhash.compute of the turned pixels": lambda im: [pdqhash.compute(pixels(im if t is None else im.transpose(t))) for t in (None, *UNDO.values())],
    }
    seconds = {name: median_seconds(fn, images, args.repeats) for name, fn in ways.items()}
    base = seconds["pdqhash.compute (1 plain hash)"]
    print_table(f"Cost per photo ({len(images)} photos at most {args.side} px, median of {args.repeats} runs)",
                ["way", "ms per photo", "ratio to one plain hash"], [[n, f"{1000 * s:.2f}", f"{s / base:.2f}"] for n, s in seconds.items()])

    one_pass, service = {t: [] for t in TURNS}, {t: [] for t in TURNS}
    for image in images:
        banked = pdq.compute_image(image.copy()).value
        if banked is None:
            continue
        for name, turn in TURNS.items():
            query = jpeg(image.transpose(turn), quality=80)
            forms, _ = pdqhash.compute_dihedral(pixels(query))
            one_pass[name].append(pdq.distance(hex_of(forms[ONE_PASS[name]]), banked))
            ours = pdq.compute_image(query, dihedral=True).value.split(",")
            service[name].append(pdq.distance(ours[DIHEDRAL_TRANSFORMS.index(name)], banked))
    rows = []
    for name in TURNS:
        a, b = np.array(one_pass[name]), np.array(service[name])
        rows.append([name, f"{np.median(a):.0f} / {a.max():.0f} / {np.mean(a > 31):.2f}", f"{np.median(b):.0f} / {b.max():.0f} / {np.mean(b > 31):.2f}"])
    print_lookup(pdq, images, args.bank, args.repeats)
    print_table(f"Bits from the banked hash to the query form that undoes the turn ({len(one_pass['rot90'])} photos): median / max / share over 31",
                ["turn of the query", "compute_dihedral, 1 pass", "compute_query (the service)"], rows)


def print_lookup(pdq, images: list[Image.Image], bank: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    banked = [v for v in (pdq.compute_image(im.copy()).value for im in images) if v is not None]
    hashes = np.concatenate([rng.integers(0, 256, (bank, 32), dtype=np.uint8), pdq.encode(banked)])
    params = choose_params(pdq, bank, IndexSettings())
    started = time.perf_counter()
    shard = Shard.build(params, [f"e{i}" for i in range(len(hashes))], hashes, None)
    build = time.perf_counter() - started
    queries = [pdq.compute_image(jpeg(im.transpose(T.FLIP_LEFT_RIGHT), quality=80), dihedral=True).value for im in images]
    queries = [q for q in queries if q is not None]
    rows = []
    for label, values in (("plain hash (1 row)", [q.split(",")[0] for q in queries]), ("8 dihedral forms (8 rows)", queries)):
        encoded = pdq.query_rows(values)[0]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            found = shard.search(encoded, 10, pdq.default_threshold)
            times.append(time.perf_counter() - start)
        rows.append([label, f"{1000 * statistics.median(times) / len(values):.3f}", sum(len(f) for f in found)])
    print_table(f"Lookup per mirrored query photo in {params.type} ({len(hashes):,} banked, built in {build:.0f} s; median of {repeats} runs "
                f"over {len(queries)} queries)", ["query", "ms per query", "hits within 31 bits"], rows)


if __name__ == "__main__":
    main()
