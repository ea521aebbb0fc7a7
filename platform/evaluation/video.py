"""Videos: files under folders or object-store prefixes, edited with PyAV (libx264).

Every file is an item (exact copies, the same bytes, once); after a seeded shuffle the first
half is banked and the rest are distractors. A source holding the ThreatExchange TMK sample
videos (shared/conformance/tmk/sample-videos) is laid out by hand instead (`TMK_ITEMS`), because
most of its files are derivatives of three subjects: the longest one (chair-orig-22, 22.4 s) is
cut into disjoint segments of 8 s ([0, 8), [8, 16) and the 6.4 s tail), re-encoded at CRF 18,
that count as different videos (a different clip of the same recording: the honest hard case),
and the shipped derivatives are extra queries (`TMK_GIVEN`), each expected to find its subject's
banked item:

    banked       chair-orig-22 [0, 8)   pattern-hd-no-bar   doorknob-hd-no-bar
    distractors  chair-orig-22 [8, 16)  chair-orig-22 [16, 22.4)   test-padded-dimensions

Every item, banked or not, goes through every edit (`EDITS`: libx264 `veryfast`, CRF 23 unless
the edit says otherwise, no audio), seeded per edit and item: the exact bytes, re-encode at
CRF 35, downscale 50%, crop 10-20% of each dimension, letterbox bars (10-20% of the height above
and below), grayscale, a logo and text overlay on every frame, horizontal flip, a 4 s excerpt
(or half of a shorter item) from the middle, its start shifted by -0.5..0.5 s so that the 1/s
sampling does not line up with the banked item's, 30 -> 15 fps, excerpt + downscale, and
crop + CRF 35. The edit parameters are seeded, but this FFmpeg's libx264 does not always write
the same bytes twice (seen after crops, and after a flip of the 1280x720 pattern-hd: its
decoded frames and their yuv420p conversion are identical from run to run, the encoder's
output is not, even with one x264 thread), so those queries can differ slightly from run to
run, and a copy near a threshold can fall either side of it.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from fractions import Fraction
from pathlib import PurePosixPath
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..errors import InvalidInput
from .core import Material, Query, query_rng

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
SIGNALS = ("vpdq", "video_embedding", "md5")
SEGMENT_SECONDS = 8.0
MIN_TAIL_SECONDS = 4.0  # a segmented source's tail shorter than this is not an item
PRESET = "veryfast"

# (file, "segments" or "whole", banked: one flag per segment, or one for the whole file)
TMK_ITEMS = [
    ("chair-orig-22-sd-bar.mp4", "segments", [True, False, False]),
    ("pattern-hd-no-bar.mp4", "whole", True),
    ("doorknob-hd-no-bar.mp4", "whole", True),
    ("test-padded-dimensions.mp4", "whole", False),
]
# shipped derivative -> (its group, the file whose first banked item it should find)
TMK_GIVEN = {
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


# -- video in and out --------------------------------------------------------------------------
def probe(data: bytes) -> tuple[float, int, int, float]:
    """(frame rate, width, height, duration seconds) from the container."""
    import av

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
    import av

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
            raise InvalidInput("no video frame in the requested range")
        for packet in ostream.encode(None):
            out.mux(packet)
        out.close()
    return buf.getvalue()


# -- items -------------------------------------------------------------------------------------
@dataclass
class Item:
    name: str
    data: bytes
    duration: float
    banked: bool | None  # None: decided by the seeded split
    source: str  # the file it comes from
    width: int = 0
    height: int = 0


def _item(name: str, data: bytes, banked: bool | None, source: str) -> Item:
    _, w, h, duration = probe(data)
    return Item(name, data, duration, banked, source, w, h)


def tmk_items(read: Callable[[str], bytes]) -> list[Item]:
    """The TMK sample videos' items (`TMK_ITEMS`), the long source cut into segments."""
    items = []
    for file, kind, banked in TMK_ITEMS:
        data = read(file)
        stem = file.removesuffix(".mp4")
        if kind == "whole":
            items.append(_item(stem, data, banked, file))
            continue
        duration, t = probe(data)[3], 0.0
        for segment in banked:
            if duration - t < MIN_TAIL_SECONDS:
                break
            end = min(duration, t + SEGMENT_SECONDS)
            clip = transcode(data, start=t, end=end if end < duration else None, crf=18)
            items.append(_item(f"{stem} [{round(t, 1):g}, {round(end, 1):g})", clip, segment, file))
            t = end
    return items


def load(sources: Sequence[str], seed: int = 0) -> tuple[list[Item], list[tuple[str, str, bytes]]]:
    """Items under `sources`, each marked banked or not, and the given derivatives (group, the
    file whose first banked item it should find, bytes)."""
    from ..storage import ObjectStore, sha256_hex

    items: list[Item] = []
    given: list[tuple[str, str, bytes]] = []
    seen: set[str] = set()
    for source in sources:
        store = ObjectStore(source)
        keys = sorted(k for k in store.list() if k.lower().endswith(VIDEO_SUFFIXES))
        by_name = {PurePosixPath(k).name: k for k in keys}
        if all(file in by_name for file, _, _ in TMK_ITEMS):
            items += tmk_items(lambda file: store.get(by_name[file]))
            given += [(group, target, store.get(by_name[file])) for file, (group, target) in TMK_GIVEN.items() if file in by_name]
            continue
        for key in keys:
            data = store.get(key)
            digest = sha256_hex(data)
            if digest not in seen:
                seen.add(digest)
                items.append(_item(key, data, None, key))
    if not items:
        raise InvalidInput(f"no videos ({', '.join(VIDEO_SUFFIXES)}) under {', '.join(sources)}")
    undecided = [i for i, it in enumerate(items) if it.banked is None]
    random.Random(seed).shuffle(undecided)
    for n, i in enumerate(undecided):
        items[i].banked = n < (len(undecided) + 1) // 2
    return items, given


# -- edits -------------------------------------------------------------------------------------
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
GIVEN_GROUPS = tuple(dict.fromkeys(group for group, _ in TMK_GIVEN.values()))
SUITE = (*EDITS, *GIVEN_GROUPS)  # what --edit may name for video


def make_queries(items: Sequence[Item], given: Sequence[tuple[str, str, bytes]], truth: dict[int, int], seed: int,
                 edits: Sequence[str]) -> Iterator[Query]:
    """Every item under every edit, then the given derivatives whose group is among `edits`."""
    for name in edits:
        if name not in EDITS:
            continue
        for i, item in enumerate(items):
            yield Query(EDITS[name](item, query_rng(seed, name, i)), name, truth.get(i), item.name)
    first = {}
    for i, item in enumerate(items):
        if item.banked:
            first.setdefault(item.source, truth[i])
    for group, target, data in given:
        if group in edits:
            yield Query(data, group, first.get(target), target)


def material(items: Sequence[Item], given: Sequence[tuple[str, str, bytes]] = (), seed: int = 0, edits: Iterable[str] = SUITE,
             notes: Sequence[str] = ()) -> Material:
    edits = list(edits)
    banked = [i for i, it in enumerate(items) if it.banked]
    truth = {i: n for n, i in enumerate(banked)}
    count = sum(e in EDITS for e in edits) * len(items) + sum(group in edits for group, _, _ in given)
    table = ["| item | banked | size | seconds |", "|---|---|---:|---:|",
             *(f"| {it.name} | {'yes' if it.banked else 'no (distractor)'} | {it.width}x{it.height} | {it.duration:.1f} |" for it in items)]
    return Material("video", [items[i].data for i in banked], [items[i].name for i in banked],
                    lambda: make_queries(items, given, truth, seed, edits), count, len(items) - len(banked), [*notes, "", *table])


def load_material(sources: Sequence[str], seed: int = 0, edits: Iterable[str] = SUITE) -> Material:
    items, given = load(sources, seed)
    layout = ("the TMK sample videos laid out by hand (chair-orig-22 cut into 8 s segments; the shipped derivatives are extra "
              "queries, each expected to find its subject's banked item)" if given else "every file an item, half of them banked")
    note = (f"Videos under {', '.join(sources)}: {layout}. Every item under each edit (PyAV, libx264 {PRESET}); frames "
            f"sampled as the service samples them (`limits.video_fps`).")
    return material(items, given, seed, edits, [note])
