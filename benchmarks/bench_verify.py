"""Geometric verification (platform/verify.py) on the eval's photo material: what the retrievers
hand it, how its inliers separate copies from non-copies per edit, the inlier threshold at
precision 0.99 (calibrated on one half of the originals, reported on the other), and its cost.

Material: `mediamatch eval`'s photo loader and seeded edits (platform/evaluation/photo.py) over
the sources given (default: scikit-image's samples, the PDQ conformance photos and Debian's
openclipart-png drawings): `--originals` banked, `--distractors` never banked, every one under
every edit, and `--fillers` more banked images so that retrieval has a bank to miss in.
A query's candidates are the descriptor's top `--k` and every banked photo within PDQ `--radius`
bits of any of its 8 dihedral forms; each is verified (query and its mirror image against the
banked keypoints). A query's copy score is its true original's inliers when retrieved, its
false score the most inliers of a wrong candidate.

    nice -n 15 .venv/bin/python benchmarks/bench_verify.py                         # 15-50 min on 2 shared cores
    nice -n 15 .venv/bin/python benchmarks/bench_verify.py --originals 40 --distractors 40 --fillers 100
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import pdqhash
from PIL import Image

from tables import print_table

from mediamatch.platform import verify
from mediamatch.platform.evaluation import photo
from mediamatch.platform.media import open_image
from mediamatch.platform.settings import LimitSettings
from mediamatch.platform.signals import get_signal_type

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = next((p for p in (ROOT.parent / "shared" / "conformance", Path("/work/shared/conformance")) if p.is_dir()), None)
SOURCES = [str(Path(__import__("skimage").data.__file__).parent), "/usr/share/openclipart"]
if CONFORMANCE is not None:
    SOURCES.append(str(CONFORMANCE / "pdq" / "data" / "reg-test-input" / "labelme-subset"))
KS = (1, 5, 10, 20, 50)
RADII = (31, 63, 95)
LIMITS = LimitSettings()
SAME_PICTURE_INLIERS = 30


def pdq_dihedral(image: Image.Image) -> np.ndarray:
    """The 8 dihedral PDQ hashes of an image (the untransformed first), packed: 8 x 32 bytes."""
    small = image.copy()
    small.thumbnail((512, 512))
    hashes = pdqhash.compute_dihedral(np.ascontiguousarray(np.asarray(small)))[0]
    return np.packbits(np.array(hashes, dtype=np.uint8), axis=1)


def distinct_pictures(images: list[Image.Image], inliers: int = SAME_PICTURE_INLIERS) -> tuple[list[Image.Image], int]:
    """The images, less each whose grey version verifies at `inliers` or more onto an earlier one's:
    the same drawing in other colours (openclipart holds a few), whose grayscale edit is the other."""
    kept, features = [], []
    for image in images:
        query = verify.query_features(image.convert("L").convert("RGB"))
        if not any(verify.verify(query, f).inliers >= inliers for f in features):
            kept.append(image)
            features.append(verify.extract(image))
    return kept, len(images) - len(kept)


def threshold_at(positives: np.ndarray, negatives: np.ndarray, precision: float = 0.99) -> int:
    """The smallest inlier count at which at least `precision` of what reaches it are copies."""
    for t in range(1, int(max(positives.max(initial=0), negatives.max(initial=0))) + 2):
        tp, fp = (positives >= t).sum(), (negatives >= t).sum()
        if tp + fp == 0 or tp / (tp + fp) >= precision:
            return t
    return int(negatives.max(initial=0)) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", action="append", help="image folders (repeatable; default: scikit-image, openclipart, conformance)")
    parser.add_argument("--originals", type=int, default=80)
    parser.add_argument("--distractors", type=int, default=80)
    parser.add_argument("--fillers", type=int, default=400, help="more banked images, never queried")
    parser.add_argument("--k", type=int, default=20, help="the descriptor's candidates verified per query")
    parser.add_argument("--radius", type=int, default=63, help="PDQ bits within which a banked photo is a candidate")
    parser.add_argument("--edit", action="append", help="only these edits (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write every query's record here (JSON) to recompute the tables")
    args = parser.parse_args()

    sources = args.photos or [s for s in SOURCES if Path(s).is_dir()]
    wanted = args.originals + args.distractors + args.fillers
    images = [im for s in sources for _, im in photo.load_images(s, limit=wanted, seed=args.seed)]
    random.Random(args.seed).shuffle(images)
    images, dropped = distinct_pictures(images)
    if len(images) < wanted:
        raise SystemExit(f"only {len(images)} images under {', '.join(sources)}, {wanted} wanted")
    originals, distractors = images[: args.originals], images[args.originals : args.originals + args.distractors]
    bank = originals + images[args.originals + args.distractors : wanted]  # originals first: truth i is bank row i
    edits = args.edit or list(photo.EDITS)
    print(f"{len(originals)} originals + {len(bank) - len(originals)} fillers banked, {len(distractors)} distractors, "
          f"{len(edits)} edits, from {', '.join(sources)}; {dropped} images left out as recoloured copies of an earlier one")

    embedding = get_signal_type("image_embedding")
    started = time.perf_counter()
    banked_images = [open_image(photo.encode(im), LIMITS.max_image_pixels) for im in bank]
    vectors = np.asarray(embedding.descriptor.embed(banked_images), np.float32)
    banked_pdq = np.array([pdq_dihedral(im)[0] for im in banked_images])
    extract_seconds = []
    banked = []
    for im in banked_images:
        t = time.perf_counter()
        banked.append(verify.extract(im))
        extract_seconds.append(time.perf_counter() - t)
    stored = [len(verify.serialize(f)) for f in banked]
    print(f"bank prepared in {time.perf_counter() - started:.0f} s")

    records = []  # (edit, truth, rank of truth by descriptor, min PDQ bits to truth, true inliers, best false inliers, candidates)
    query_seconds, verify_seconds = [], []
    for q in photo.make_queries(originals, distractors, args.seed, edits):
        image = open_image(q.content, LIMITS.max_image_pixels)
        vector = np.asarray(embedding.descriptor.embed([image]), np.float32)[0]
        order = np.argsort(1.0 - vectors @ vector, kind="stable")
        bits = np.unpackbits(pdq_dihedral(image)[:, None, :] ^ banked_pdq[None], axis=2).sum(axis=2).min(axis=0)
        candidates = sorted(set(order[: args.k].tolist()) | set(np.flatnonzero(bits <= args.radius).tolist()))
        t0 = time.perf_counter()
        features = verify.query_features(image)
        t1 = time.perf_counter()
        inliers = {c: verify.verify(features, banked[c]).inliers for c in candidates}
        t2 = time.perf_counter()
        query_seconds.append(t2 - t0)
        verify_seconds.append((t2 - t1) / max(1, len(candidates)))
        truth = q.truth
        rank = int(np.flatnonzero(order == truth)[0]) if truth is not None else -1
        true_inliers = inliers.get(truth, 0) if truth is not None else 0
        if truth is not None and truth not in inliers:  # not retrieved: what verification would have said
            true_inliers = -verify.verify(features, banked[truth]).inliers
        false = max((n for c, n in inliers.items() if c != truth), default=0)
        records.append((q.edit, truth, rank, int(bits[truth]) if truth is not None else -1, true_inliers, false, len(candidates)))
        if len(records) % 200 == 0:
            print(f"  {len(records)} queries", flush=True)

    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "records": records}))
    report(records, edits, args)
    cost(extract_seconds, stored, query_seconds, verify_seconds, records)


def report(records, edits, args) -> None:
    edit = np.array([r[0] for r in records])
    truth = np.array([-1 if r[1] is None else r[1] for r in records])
    rank, bits, true, false = (np.array([r[i] for r in records]) for i in (2, 3, 4, 5))
    copy = truth >= 0
    calibration = np.where(copy, truth % 2 == 0, np.arange(len(records)) % 2 == 0)  # half the originals; half the distractors' queries
    other = threshold_at(np.maximum(true, 0)[copy & ~calibration], false[~calibration])
    print(f"\n(calibrated the other way round, on the held-out half: {other} inliers)")
    positives = np.where(copy & calibration, np.maximum(true, 0), 0)[copy & calibration]
    negatives = false[calibration]
    t = threshold_at(positives, negatives)
    print(f"\ninlier threshold at precision 0.99 on the calibration half: {t} "
          f"({len(positives)} copies, {len(negatives)} queries' best non-copy)")
    held = ~calibration
    rows = []
    for name in edits:
        mine = held & (edit == name)
        copies = mine & copy
        rows.append([name, int(copies.sum()),
                     *(f"{np.mean(rank[copies] < k):.2f}" for k in KS),
                     *(f"{np.mean(bits[copies] <= r):.2f}" for r in RADII),
                     f"{np.mean(np.abs(true[copies]) >= t):.2f}", f"{np.mean(true[copies] >= t):.2f}",
                     int(np.median(np.abs(true[copies]))), int(np.median(false[mine])), int(false[mine].max(initial=0)),
                     int((false[mine] >= t).sum())])
    print_table(f"Per edit, held-out half: retrieval recall (descriptor top-k; PDQ within r bits of any dihedral form), "
                f"verification recall at {t} inliers (given the true item; and end to end through top-{args.k} | PDQ <= {args.radius}), "
                f"inliers of copies and of the best non-copy",
                ["edit", "copies", *(f"top-{k}" for k in KS), *(f"pdq<={r}" for r in RADII), "verified (given)",
                 "verified (end to end)", "median copy inliers", "median best non-copy", "max best non-copy", "false matches"], rows)
    tp, fp = int((true[held & copy] >= t).sum()), int((false[held] >= t).sum())
    print(f"\nheld-out overall: recall {tp / max(1, int((held & copy).sum())):.3f}, precision {tp / max(1, tp + fp):.3f} "
          f"({tp} copies verified, {fp} queries with a non-copy verified)")


def cost(extract_seconds, stored, query_seconds, verify_seconds, records) -> None:
    candidates = np.array([r[6] for r in records])
    ms = lambda a: f"{1000 * np.median(a):.2f}"  # noqa: E731
    print_table("Cost (medians, one thread)", ["what", "value"], [
        ["keypoints of a banked photo, ms", ms(extract_seconds)],
        ["stored keypoints per entry, bytes (median / max)", f"{int(np.median(stored))} / {max(stored)}"],
        ["verification per candidate (query + mirror vs one entry), ms", ms(verify_seconds)],
        ["candidates per query (median / p99)", f"{int(np.median(candidates))} / {int(np.percentile(candidates, 99))}"],
        ["per query: features (2 extractions) + every candidate, ms", ms(query_seconds)],
    ])


if __name__ == "__main__":
    main()
