"""The edits that copies of a photo go through, as one seeded suite.

The same functions make the evaluation's queries (`EVAL_EDITS`, fixed parameters drawn from a
seeded generator) and the training job's augmentations (`random_edit`, fresh parameters each
time), so the descriptor learns exactly the invariances the evaluation measures.
Every edit takes an RGB image, a `random.Random` and a pool of other images (for overlays and
screenshot-like compositions) and returns a new RGB image.
"""

from __future__ import annotations

import io
import random
from functools import lru_cache
from typing import Callable, Sequence

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

Edit = Callable[[Image.Image, random.Random, Sequence[Image.Image]], Image.Image]

_FONT_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "DejaVuSans-Bold.ttf")
_WORDS = "breaking news share this now wow look original leaked free win click here truth viral meme lol omg".split()
_SYMBOLS = "☺☻♥♦♣♠★☀☂☃✈✂✔✖❤♫☎✿"


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.ImageFont:
    for name in _FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def _color(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randrange(256) for _ in range(3))


def resize(image, rng, pool):
    scale = rng.uniform(0.3, 0.8) if rng.random() < 0.7 else rng.uniform(1.2, 2.0)
    return image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale))), Image.BILINEAR)


def crop(image, rng, pool):
    """Keep 50-90% of each side (10-50% cropped), anywhere in the image."""
    w, h = image.size
    cw, ch = round(w * rng.uniform(0.5, 0.9)), round(h * rng.uniform(0.5, 0.9))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return image.crop((x, y, x + cw, y + ch))


def rotate(image, rng, pool):
    angle = rng.choice([90, 180, 270]) if rng.random() < 0.3 else rng.choice([-1, 1]) * rng.uniform(5, 30)
    return image.rotate(angle, resample=Image.BILINEAR, expand=True, fillcolor=_color(rng) if rng.random() < 0.5 else (0, 0, 0))


def flip(image, rng, pool):
    return ImageOps.mirror(image) if rng.random() < 0.75 else ImageOps.flip(image)


def jpeg(image, rng, pool):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=rng.randint(20, 50))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def blur(image, rng, pool):
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 3.0) * max(image.size) / 512))


def color(image, rng, pool):
    """Brightness, contrast and saturation, each moved by up to +-50%."""
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(0.5, 1.5))
    return image


def grayscale(image, rng, pool):
    return ImageOps.grayscale(image).convert("RGB")


def pad(image, rng, pool):
    """A border or letterbox bars of 5-30% of the size, plain or of another picture."""
    w, h = image.size
    left, right, top, bottom = (round(s * rng.uniform(0.05, 0.3)) for s in (w, w, h, h))
    if rng.random() < 0.5:  # letterbox: bars on two opposite sides only
        left, right = (left, right) if rng.random() < 0.5 else (0, 0)
        top, bottom = (0, 0) if left else (top, bottom)
    size = (w + left + right, h + top + bottom)
    canvas = pool[rng.randrange(len(pool))].resize(size) if pool and rng.random() < 0.3 else Image.new("RGB", size, _color(rng))
    canvas.paste(image, (left, top))
    return canvas


def text_overlay(image, rng, pool):
    """A caption of a few words, meme-style, at the top or bottom."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    size = max(8, round(image.height * rng.uniform(0.08, 0.18)))
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4))).upper()
    y = rng.choice([round(image.height * 0.03), round(image.height * (0.97 - size / image.height * 1.2))])
    draw.text((round(image.width * rng.uniform(0.0, 0.2)), y), words, font=font(size), fill=_color(rng),
              stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
    return image


def emoji_overlay(image, rng, pool):
    """One to four emoji-like symbols, 10-30% of the size, anywhere."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 4)):
        size = max(8, round(min(image.size) * rng.uniform(0.1, 0.3)))
        xy = (rng.randint(0, max(0, image.width - size)), rng.randint(0, max(0, image.height - size)))
        draw.text(xy, rng.choice(_SYMBOLS), font=font(size), fill=_color(rng))
    return image


def overlay_onto(image, rng, pool):
    """The photo shown inside another picture at 40-80% of its width: a screenshot, a post, a collage."""
    background = pool[rng.randrange(len(pool))] if pool else Image.new("RGB", image.size, _color(rng))
    width = max(64, round(image.width * rng.uniform(1.25, 2.5)))
    canvas = background.resize((width, max(64, round(width * rng.uniform(0.6, 1.6)))))
    scale = min(canvas.width * rng.uniform(0.4, 0.8) / image.width, canvas.height * 0.9 / image.height)
    inner = image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale))))
    canvas.paste(inner, (rng.randint(0, canvas.width - inner.width), rng.randint(0, canvas.height - inner.height)))
    return canvas


def aspect(image, rng, pool):
    """Stretched by 1.3-2x along one axis."""
    factor = rng.uniform(1.3, 2.0)
    w, h = image.size
    return image.resize((round(w * factor), h) if rng.random() < 0.5 else (w, round(h * factor)), Image.BILINEAR)


SINGLE_EDITS: dict[str, Edit] = {
    "resize": resize,
    "crop": crop,
    "rotate": rotate,
    "flip": flip,
    "jpeg": jpeg,
    "blur": blur,
    "color": color,
    "grayscale": grayscale,
    "pad": pad,
    "text": text_overlay,
    "emoji": emoji_overlay,
    "overlay": overlay_onto,
    "aspect": aspect,
}

# Pairs a platform sees every day; each is evaluated as its own row.
COMBINED_EDITS = [("crop", "jpeg"), ("text", "resize"), ("rotate", "color"), ("overlay", "jpeg"), ("flip", "crop"), ("pad", "grayscale")]


def compose(*names: str) -> Edit:
    def edit(image, rng, pool):
        for name in names:
            image = SINGLE_EDITS[name](image, rng, pool)
        return image

    return edit


EVAL_EDITS: dict[str, Edit] = {**SINGLE_EDITS, **{"+".join(pair): compose(*pair) for pair in COMBINED_EDITS}}

# Edits perceptual hashes are built for: a learned descriptor must do no worse on them.
PDQ_FRIENDLY = ("resize", "jpeg", "blur")


def random_edit(image: Image.Image, rng: random.Random, pool: Sequence[Image.Image], max_edits: int = 3) -> Image.Image:
    """A training view: one to `max_edits` edits in random order; sometimes none."""
    if rng.random() < 0.1:
        return image
    for name in rng.sample(list(SINGLE_EDITS), rng.randint(1, max_edits)):
        image = SINGLE_EDITS[name](image, rng, pool)
    return image
