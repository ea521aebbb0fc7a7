"""Evaluate the video signals (vpdq, video_embedding, md5) on real videos nobody on this project made.

Material: the ThreatExchange TMK sample videos in shared/conformance/tmk/sample-videos (three
subjects, chair, pattern and doorknob, with derivatives of each, and a test card). There are few
distinct videos, so the longest one (chair-orig-22, 22.4 s) is cut into disjoint segments of
8 s ([0, 8), [8, 16) and the 6.4 s tail [16, 22.4)), re-encoded losslessly enough (libx264 CRF 18)
to be separate items: segments of one source never overlap in time, and a segment's neighbours
count as different videos (the honest "different clip of the same recording" case; the tail
shows the same chair as the start of [0, 8)). The items:

    banked       chair-orig-22 [0, 8)   pattern-hd-no-bar   doorknob-hd-no-bar
    distractors  chair-orig-22 [8, 16)  chair-orig-22 [16, 22.4)   test-padded-dimensions

Every item, banked or not, is edited the same seeded ways (PyAV, libx264 `veryfast`, CRF 23
unless the edit says otherwise, no audio) and queried; a distractor's query has no true match,
so anything it returns is a false positive. The edits: the exact bytes, re-encode at CRF 35,
downscale 50%, crop 10-20% of each dimension, letterbox bars (10-20% of the height above and
below), grayscale, a logo and text overlay (Pillow, on every frame), horizontal flip, a clip
excerpt (4 s, or half of a shorter item, from the middle of the item, its start shifted by a
seeded -0.5..0.5 s so the 1/s sampling does not line up with the banked item's), 30 -> 15 fps,
excerpt + downscale, crop + CRF 35. The given derivatives are extra queries, used as they are;
each is expected to find its subject's banked item: chair-22-* (grey, sepia, small and large
logo; the same 22.4 s timeline as chair-orig-22, so they contain [0, 8) whole), chair-19 and
chair-20 (trimmed cuts of the same recording: they start 3.7 s and 2.0 s into it, so they hold
54% and 75% of [0, 8)), chair-orig-22 itself (a longer upload holding the banked clip),
pattern-sd-* (SD grey and logo versions with bars) and pattern-longer (one frame earlier, ~1 s
longer).

Everything goes through the service's path: signals from `signal_type.compute` at the service's
limits (1 frame per second), banked as entries of a `Catalog` on a temporary local store,
searched by `LiveIndex` (`search_bags` for vpdq and video_embedding, `search` for md5) at each
type's default threshold for precision/recall, and with a wide radius (vpdq 100, video_embedding
1.0) for µAP: every (query, banked item, score = signal_type.score(distance)) pooled, ranked
globally, AP divided by the number of true pairs.

    nice -n 15 .venv/bin/python benchmarks/eval_video.py            # all items, edits and given derivatives
    nice -n 15 .venv/bin/python benchmarks/eval_video.py --quick    # 4 items, 3 edits: a smoke run

Prints Markdown tables: precision / recall / µAP per edit and overall, the distances of true and
wrong pairs per edit, and compute speed (seconds of video per second of CPU and of wall time).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from tables import fmt, micro_ap, print_table

from mediamatch.platform.catalog import Catalog, Entry
from mediamatch.platform.live import LiveIndex
from mediamatch.platform.settings import LimitSettings
from mediamatch.platform.signals import get_signal_type
from mediamatch.platform.storage import ObjectStore

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "tmk" / "sample-videos"
if not VIDEOS.is_dir():
    VIDEOS = Path("/work/shared/conformance/tmk/sample-videos")
LIMITS = LimitSettings(max_upload_bytes=10**9)
SIGNALS = ["vpdq", "video_embedding", "md5"]
WIDE_RADIUS = {"vpdq": 100.0, "video_embedding": 1.0, "md5": 0.0}
SEGMENT_SECONDS = 8.0
MIN_TAIL_SECONDS = 4.0  # a source's tail shorter than this is not an item
PRESET = "veryfast"

# (source file, segmented?, banked segments or True/False for a whole file)
ITEMS = [
    ("chair-orig-22-sd-bar.mp4", "segments", [True, False, False]),
    ("pattern-hd-no-bar.mp4", "whole", True),
    ("doorknob-hd-no-bar.mp4", "whole", True),
    ("test-padded-dimensions.mp4", "whole", False),
]
# given derivative -> (group, the source whose first banked item it should find)
GIVEN = {
    "chair-orig-22-sd-bar.mp4": ("given: whole source holding the banked clip", "chair-orig-22-sd-bar.mp4"),
    "chair-22-sd-grey-bar.mp4": ("given: grey", "chair-orig-22-sd-bar.mp4"),
    "pattern-sd-grey-bar.mp4": ("given: grey", "pattern-hd-no-bar.mp4"),
    "chair-22-sd-sepia-bar.mp4": ("given: sepia", "chair-orig-22-sd-bar.mp4"),
    "chair-22-with-small-logo-bar.mp4": ("given: small logo", "chair-orig-22-sd-bar.mp4"),
    "pattern-sd-with-small-logo-bar.mp4": ("given: small logo", "pattern-hd-no-bar.mp4"),
    "chair-22-with-large-logo-bar.mp4": ("given: large logo", "chair-orig-22-sd-bar.mp4"),
    "pattern-sd-with-large-logo-bar.mp4": ("given: large logo", "pattern-hd-no-bar.mp4"),
    "chair-19-sd-bar.mp4": ("given: trimmed cut (54% / 75% of the clip)", "chair-orig-22-sd-bar.mp4"),
    "chair-20-sd-bar.mp4": ("given: trimmed cut (54% / 75% of the clip)", "chair-orig-22-sd-bar.mp4"),
    "pattern-longer-no-bar.mp4": ("given: longer cut", "pattern-hd-no-bar.mp4"),
}


# --------------------------------------------------------------------------- video in and out


def probe(data: bytes) -> tuple[float, int, int, float]:
    """(frame rate, width, height, duration seconds) from the container."""
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        rate = float(s.average_rate or s.base_rate)
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        else:
            duration = c.duration / av.time_base
        return rate, s.codec_context.width, s.codec_context.height, duration


def transcode(data: bytes, transform: Callable[[Image.Image], Image.Image] | None = None, start: float = 0.0,
              end: float | None = None, step: int = 1, crf: int = 23) -> bytes:
    """The video's frames in [start, end) seconds (by frame number), every `step`-th, through
    `transform`, encoded as H.264 (yuv420p, even dimensions) in MP4 at the rate / step."""
    buf = io.BytesIO()
    with av.open(io.BytesIO(data)) as src:
        stream = src.streams.video[0]
        stream.thread_type = "AUTO"
        rate = Fraction(stream.average_rate or stream.base_rate)
        first, last = round(start * rate), None if end is None else round(end * rate)
        out, ostream, n_out = None, None, 0
        for n, frame in enumerate(src.decode(stream)):
            if n < first or (n - first) % step:
                continue
            if last is not None and n >= last:
                break
            image = frame.to_image()
            if transform is not None:
                image = transform(image)
            w, h = image.width // 2 * 2, image.height // 2 * 2
            if (w, h) != image.size:
                image = image.crop((0, 0, w, h))
            if out is None:
                out = av.open(buf, mode="w", format="mp4")
                ostream = out.add_stream("libx264", rate=rate / step, options={"crf": str(crf), "preset": PRESET})
                ostream.width, ostream.height, ostream.pix_fmt = w, h, "yuv420p"
            vf = av.VideoFrame.from_image(image.convert("RGB"))
            vf.pts, vf.time_base = n_out, 1 / (rate / step)
            n_out += 1
            for packet in ostream.encode(vf):
                out.mux(packet)
        if out is None:
            raise ValueError("no frame in the requested range")
        for packet in ostream.encode(None):
            out.mux(packet)
        out.close()
    return buf.getvalue()


# --------------------------------------------------------------------------- items and edits


@dataclass
class Item:
    name: str
    data: bytes
    duration: float
    banked: bool
    source: str
    width: int = 0
    height: int = 0


def build_items(names: list[str] | None) -> list[Item]:
    items = []
    for source, kind, banked in ITEMS:
        data = (VIDEOS / source).read_bytes()
        rate, w, h, duration = probe(data)
        stem = source.removesuffix(".mp4")
        if kind == "whole":
            candidates = [(stem, None, None, banked)]
        else:
            candidates, t = [], 0.0
            while duration - t >= MIN_TAIL_SECONDS:
                end = min(duration, t + SEGMENT_SECONDS)
                candidates.append((f"{stem} [{round(t, 1):g}, {round(end, 1):g})", t, end if end < duration else None, banked[len(candidates)]))
                t = end
        for name, start, end, is_banked in candidates:
            if names and not any(name.startswith(n) for n in names):
                continue
            clip = data if start is None else transcode(data, start=start, end=end, crf=18)
            _, cw, ch, cd = probe(clip)
            items.append(Item(name, clip, cd, is_banked, source, cw, ch))
    return items


def _crop(rng: np.random.Generator) -> Callable[[Image.Image], Image.Image]:
    fx, fy = rng.uniform(0.10, 0.20, 2)  # share of each dimension removed
    lx, ty = rng.uniform(0.2, 0.8, 2)  # how it splits between the two sides

    def crop(im: Image.Image) -> Image.Image:
        w, h = im.size
        cw, ch = round(w * fx), round(h * fy)
        left, top = round(cw * lx), round(ch * ty)
        return im.crop((left, top, w - (cw - left), h - (ch - top)))

    return crop


def _pad(rng: np.random.Generator) -> Callable[[Image.Image], Image.Image]:
    share = rng.uniform(0.10, 0.20)

    def pad(im: Image.Image) -> Image.Image:
        bar = round(im.height * share)
        out = Image.new("RGB", (im.width, im.height + 2 * bar), (0, 0, 0))
        out.paste(im, (0, bar))
        return out

    return pad


def _logo(rng: np.random.Generator) -> Callable[[Image.Image], Image.Image]:
    corner = int(rng.integers(4))
    text = f"@clips{int(rng.integers(100, 9999))}  #viral"
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    cache: dict[tuple[int, int], Image.Image] = {}

    def overlay(size: tuple[int, int]) -> Image.Image:
        w, h = size
        layer = Image.new("RGBA", size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        box_w, box_h = int(w * 0.55), int(h * 0.09)
        r = box_h // 2 - 3
        size = max(8, box_h // 2)
        font = ImageFont.load_default(size=size)
        while size > 8 and font.getlength(text) > box_w - 2 * r - 20:
            size -= 1
            font = ImageFont.load_default(size=size)
        x = int(w * 0.03) if corner % 2 == 0 else w - box_w - int(w * 0.03)
        y = int(h * 0.04) if corner < 2 else h - box_h - int(h * 0.04)
        draw.rounded_rectangle((x, y, x + box_w, y + box_h), radius=box_h // 4, fill=(*color, 170))
        draw.ellipse((x + 4, y + box_h // 2 - r, x + 4 + 2 * r, y + box_h // 2 + r), fill=(255, 255, 255, 230))
        draw.text((x + 2 * r + 12, y + box_h // 2), text, font=font, fill=(255, 255, 255, 255), anchor="lm")
        return layer

    def logo(im: Image.Image) -> Image.Image:
        if im.size not in cache:
            cache[im.size] = overlay(im.size)
        return Image.alpha_composite(im.convert("RGBA"), cache[im.size]).convert("RGB")

    return logo


def _half(im: Image.Image) -> Image.Image:
    return im.resize((max(2, im.width // 2), max(2, im.height // 2)), Image.BILINEAR)


def _gray(im: Image.Image) -> Image.Image:
    return ImageOps.grayscale(im).convert("RGB")


def _excerpt(item: Item, rng: np.random.Generator) -> tuple[float, float]:
    length = min(4.0, item.duration / 2)
    start = float(np.clip((item.duration - length) / 2 + rng.uniform(-0.5, 0.5), 0, item.duration - length))
    return start, start + length


# name -> function(item, rng) -> bytes
EDITS: dict[str, Callable[[Item, np.random.Generator], bytes]] = {
    "exact copy": lambda it, rng: it.data,
    "re-encode CRF 35": lambda it, rng: transcode(it.data, crf=35),
    "downscale 50%": lambda it, rng: transcode(it.data, _half),
    "crop 10-20%": lambda it, rng: transcode(it.data, _crop(rng)),
    "letterbox bars": lambda it, rng: transcode(it.data, _pad(rng)),
    "grayscale": lambda it, rng: transcode(it.data, _gray),
    "logo + text overlay": lambda it, rng: transcode(it.data, _logo(rng)),
    "horizontal flip": lambda it, rng: transcode(it.data, ImageOps.mirror),
    "excerpt (4 s from the middle)": lambda it, rng: transcode(it.data, None, *_excerpt(it, rng)),
    "frame rate 30 -> 15": lambda it, rng: transcode(it.data, step=2),
    "excerpt + downscale 50%": lambda it, rng: transcode(it.data, _half, *_excerpt(it, rng)),
    "crop + re-encode CRF 35": lambda it, rng: transcode(it.data, _crop(rng), crf=35),
}
QUICK_EDITS = ["exact copy", "re-encode CRF 35", "excerpt (4 s from the middle)"]


# --------------------------------------------------------------------------- signals and the service's path


@dataclass
class Query:
    group: str
    label: str
    data: bytes
    truth: int | None  # index of the banked item it should find, None: a distractor
    values: dict[str, object] = field(default_factory=dict)


class Timer:
    """Seconds of video, CPU seconds (all threads of this process) and wall seconds per signal."""

    def __init__(self):
        self.rows: dict[str, list[tuple[float, float, float]]] = {}

    def compute(self, name: str, data: bytes, seconds: float):
        st = get_signal_type(name)
        c0, w0 = time.process_time(), time.perf_counter()
        signal = st.compute(data, LIMITS)
        self.rows.setdefault(name, []).append((seconds, time.process_time() - c0, time.perf_counter() - w0))
        return signal.value


class Bank:
    """Banked items as catalog entries on a local store, searched as a shard searcher does."""

    def __init__(self, root: str, values: dict[int, dict[str, object]]):
        self.store = ObjectStore(root)
        catalog = Catalog(self.store)
        catalog.create_bank("eval")
        entries = catalog.add_entries("eval", [Entry(bank="eval", content_type="video", signals={k: v for k, v in vals.items() if v is not None},
                                                     metadata={"item": i}) for i, vals in values.items()])
        self.item = {e.entry_id: e.metadata["item"] for e in entries}

    def search(self, name: str, values: list, k: int, radius: float) -> list[list[tuple[int, float]]]:
        """Per query value, up to k (banked item, distance) within `radius`, nearest first; [] for None."""
        st = get_signal_type(name)
        live = LiveIndex(self.store, st)
        asked = [v for v in values if v is not None]
        if not asked:
            return [[] for _ in values]
        found = live.search_bags(asked, k, radius)[1] if st.bag else live.search(st.encode(asked), k, radius)[1]
        it = iter(found)
        return [[(self.item[e], float(d)) for e, _, d in next(it)] if v is not None else [] for v in values]


# --------------------------------------------------------------------------- metrics





def metrics(queries: list[Query], found: list[list[tuple[int, float]]], wide: list[list[tuple[int, float]]], name: str, seed: int) -> dict:
    st = get_signal_type(name)
    pred = tp = n_true = 0
    scores, true = [], []
    for q, hits, all_hits in zip(queries, found, wide):
        n_true += q.truth is not None
        pred += len(hits)
        tp += sum(item == q.truth for item, _ in hits)
        for item, d in all_hits:
            scores.append(st.score(d))
            true.append(item == q.truth)
    return {
        "queries": len(queries), "true": n_true, "predicted": pred, "fp": pred - tp,
        "precision": tp / pred if pred else float("nan"),
        "recall": tp / n_true if n_true else float("nan"),
        "uap": micro_ap(np.array(scores, dtype=np.float64), np.array(true, dtype=bool), n_true, np.random.default_rng(seed)),
    }








# --------------------------------------------------------------------------- run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="4 items, 3 edits, no given derivatives: a smoke run")
    parser.add_argument("--signals", nargs="+", default=SIGNALS, choices=SIGNALS)
    parser.add_argument("--edits", nargs="+", default=None, help="edit names (default: all)")
    parser.add_argument("--no-given", action="store_true", help="skip the given derivatives")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="eval_video_")
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, tmp: str) -> None:
    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    names = ["chair-orig-22-sd-bar [0, 8)", "chair-orig-22-sd-bar [8, 16)", "pattern", "test-padded"] if args.quick else None
    edit_names = args.edits or (QUICK_EDITS if args.quick else list(EDITS))
    signals = args.signals
    items = build_items(names)
    banked = [i for i, it in enumerate(items) if it.banked]

    print(f"## Video signals on the TMK sample videos (seed {args.seed}, {LIMITS.video_fps:g} frame/s sampled)\n")
    if "video_embedding" in signals:
        image = get_signal_type("image_embedding")
        image.warm_up()
        print(f"image descriptor: version {image.model_version!r}, frame radius (cosine) {image.default_threshold:g}\n")
    print("| item | banked | size | seconds |")
    print("|---|---|---:|---:|")
    for it in items:
        print(f"| {it.name} | {'yes' if it.banked else 'no (distractor)'} | {it.width}x{it.height} | {it.duration:.1f} |")
    sys.stdout.flush()

    timer = Timer()
    t0 = time.perf_counter()
    bank_values = {i: {s: timer.compute(s, items[i].data, items[i].duration) for s in signals} for i in banked}
    bank = Bank(os.path.join(tmp, "bank"), bank_values)
    print(f"\nbanked {len(banked)} items in {time.perf_counter() - t0:.1f} s", flush=True)

    queries: list[Query] = []
    t0 = time.perf_counter()
    edit_s = 0.0
    for edit in edit_names:
        for i, it in enumerate(items):
            te = time.perf_counter()
            data = EDITS[edit](it, rng)
            edit_s += time.perf_counter() - te
            queries.append(Query(edit, it.name, data, i if it.banked else None))
    if not (args.quick or args.no_given):
        first_banked = {}
        for i in banked:
            first_banked.setdefault(items[i].source, i)
        for file, (group, source) in GIVEN.items():
            queries.append(Query(group, file, (VIDEOS / file).read_bytes(), first_banked.get(source)))
    for q in queries:
        seconds = probe(q.data)[3]
        q.values = {s: timer.compute(s, q.data, seconds) for s in signals}
    print(f"{len(queries)} queries ({sum(q.truth is not None for q in queries)} with a banked true match) "
          f"made in {edit_s:.0f} s and hashed in {time.perf_counter() - t0 - edit_s:.0f} s", flush=True)

    k = max(10, len(banked))
    found, wide = {}, {}
    for s in signals:
        st = get_signal_type(s)
        values = [q.values[s] for q in queries]
        found[s] = bank.search(s, values, k, st.default_threshold)
        wide[s] = bank.search(s, values, k, WIDE_RADIUS[s])
        # the thresholded search must be the wide one cut at the threshold
        for a, b in zip(found[s], wide[s]):
            assert a == [h for h in b if h[1] <= st.default_threshold], (s, a, b)
        missing = [f"{q.group} / {q.label}" for q, v in zip(queries, values) if v is None]
        if missing:
            print(f"{s}: no value (no frame of quality >= 50), counted as not found: {'; '.join(missing)}", flush=True)

    groups = list(dict.fromkeys(q.group for q in queries))
    synthetic = [g for g in groups if not g.startswith("given:")]
    given = [g for g in groups if g.startswith("given:")]
    selections = [(g, [g]) for g in groups] + [("**all edits**", synthetic)] + ([("**all given derivatives**", given), ("**overall**", groups)] if given else [])

    results = {}
    for s in signals:
        results[s] = {}
        for label, members in selections:
            sel = [j for j, q in enumerate(queries) if q.group in members]
            results[s][label] = metrics([queries[j] for j in sel], [found[s][j] for j in sel], [wide[s][j] for j in sel], s, args.seed)

    thresholds = {s: get_signal_type(s).default_threshold for s in signals}
    header = ["edit", "queries (true / distractor)"] + [f"{s} P / R / µAP" for s in signals]
    rows = []
    for label, _ in selections:
        r0 = results[signals[0]][label]
        rows.append([label, f"{r0['true']} / {r0['queries'] - r0['true']}"]
                    + [f"{fmt(results[s][label]['precision'])} / {fmt(results[s][label]['recall'])} / {fmt(results[s][label]['uap'])}" for s in signals])
    print_table("Precision / recall / µAP per edit at each signal's default threshold ("
                + ", ".join(f"{s} distance <= {thresholds[s]:g}" for s in signals)
                + "); P n/a = nothing returned", header, rows)
    overall = "**overall**" if given else "**all edits**"
    print_table(f"Returned pairs ({overall.strip('*')})",
                ["signal", "queries", "true pairs", "returned", "false positives", "precision", "recall", "µAP"],
                [[s, results[s][overall]["queries"], results[s][overall]["true"], results[s][overall]["predicted"],
                  results[s][overall]["fp"], results[s][overall]["precision"], results[s][overall]["recall"], results[s][overall]["uap"]]
                 for s in signals])

    # distances of the true pair (per positive query) and the nearest wrong pair, per group
    bag = [s for s in signals if get_signal_type(s).bag]
    if bag:
        rows = []
        for g in groups:
            row = [g]
            for s in bag:
                true_d, wrong_d = [], []
                for q, hits in zip(queries, wide[s]):
                    if q.group != g:
                        continue
                    if q.truth is not None:
                        true_d.append(next((d for it, d in hits if it == q.truth), float("inf")))
                    wrong_d += [d for it, d in hits if it != q.truth]
                t = " ".join("-" if not np.isfinite(d) else f"{d:.3g}" for d in true_d)
                row += [t or "-", f"{min(wrong_d):.3g}" if wrong_d else "-"]
            rows.append(row)
        print_table("Distances per edit: each true pair (- = not even within the wide radius) and the nearest wrong pair "
                    "(threshold: " + ", ".join(f"{s} {thresholds[s]:g}" for s in bag) + ")",
                    ["edit"] + [c for s in bag for c in (f"{s} true pairs", f"{s} nearest wrong")], rows)

    rows = []
    for s in signals:
        a = np.array(timer.rows[s])
        rows.append([s, len(a), f"{a[:, 0].sum():.0f}", f"{a[:, 1].sum():.1f}", f"{a[:, 2].sum():.1f}",
                     f"{a[:, 0].sum() / max(a[:, 1].sum(), 1e-9):.1f}", f"{a[:, 0].sum() / max(a[:, 2].sum(), 1e-9):.1f}",
                     f"{1000 * np.median(a[:, 2]):.0f}"])
    print_table(f"Compute speed (`compute` of every banked and query video, {LIMITS.video_fps:g} frame/s sampled, "
                f"every frame decoded; CPU = all threads of this process; 2 shared cores, nice 15)",
                ["signal", "videos", "video s", "CPU s", "wall s", "video s per CPU s", "video s per wall s", "median wall ms per video"], rows)
    print(f"\ntotal run time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
