"""Photos: images under folders or object-store prefixes, edited by `models.edits.EVAL_EDITS`.

Originals are banked; every original and every distractor (never banked) is edited by every
edit of the suite (seeded per edit and image); overlays draw from the distractors."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from PIL import Image

from .. import verify
from ..errors import InvalidInput, MediamatchError
from ..media import open_image
from ..models.edits import EVAL_EDITS, PDQ_FRIENDLY
from ..settings import LimitSettings
from ..signals import get_signal_type
from .core import EvalResult, Material, Matcher, Progress, Query, evaluate_material

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_SIDE = 512  # originals are scaled down to this first: the edits then take milliseconds
MIN_SIDE = 64  # smaller images (icons, glyphs) are skipped: too little to copy
SAME_PICTURE = 10  # PDQ bits: closer images count as one picture
SIGNALS = ("pdq", "image_embedding", "keypoints")
EDITS = tuple(EVAL_EDITS)

# Real photographs (no drawings, renders, paintings, masks or screenshots) the project may use,
# for a report section of their own beside the drawings; one of each stereo pair or sequence.
OPENCV_EXAMPLES = Path("/usr/share/doc/opencv-doc/examples")  # Debian's opencv-doc
OPENCV_PHOTOS = (
    "alphamat/input_images/plant.jpg", "dnn_superres/butterfly.png", "hfs/data/000.jpg", "hfs/data/002.jpg", "reg/home.png",
    *(f"data/{n}" for n in ("aero1.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "board.jpg", "box_in_scene.png",
                            "building.jpg", "butterfly.jpg", "chicky_512.png", "ela_original.jpg", "fruits.jpg", "graf1.png", "home.jpg",
                            "left01.jpg", "leuvenA.jpg", "licenseplate_motion.jpg", "messi5.jpg", "orange.jpg", "pca_test1.jpg",
                            "rubberwhale1.png", "smarties.png", "squirrel_cls.jpg", "stuff.jpg", "sudoku.png")),
    *(f"text/scenetext0{i}.jpg" for i in range(1, 7)), *(f"text/scenetext_segmented_word0{i}.jpg" for i in range(1, 6)),
)
PALAPELI_PHOTOS = Path("/usr/share/palapeli/collection")  # Debian's palapeli-data: its puzzles' photos
SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png", "coins.png",
                  "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "microaneurysms.png", "moon.png", "motorcycle_left.png",
                  "page.png", "retina.jpg", "rocket.jpg", "text.png")


def thumbnail(data: bytes, limits: LimitSettings = LimitSettings(), side: int = MAX_SIDE) -> Image.Image:
    """An image decoded as the service decodes it, scaled down to at most `side` pixels."""
    image = open_image(data, limits.max_image_pixels)
    image.thumbnail((side, side))
    return image


def load_images(sources: str | Sequence[str], limit: int | None = None, seed: int = 0) -> list[tuple[str, Image.Image]]:
    """Decodable images of at least MIN_SIDE pixels a side under one or more folders or
    object-store prefixes (name, image), each source's in a seeded order, each a distinct picture
    (`distinct`) across all of them: Tux Paint ships the same fireman stamp under people/ and
    military/, and a banked one must not come back as a distractor."""
    from ..storage import ObjectStore

    def items() -> Iterator[tuple[str, bytes]]:
        for source in [sources] if isinstance(sources, str) else sources:
            store = ObjectStore(source)
            keys = [k for k in store.list() if k.lower().endswith(IMAGE_SUFFIXES)]
            random.Random(seed).shuffle(keys)
            yield from ((key, store.get(key)) for key in keys)

    return distinct(items(), limit)


def distinct(items: Iterable[tuple[str, bytes]], limit: int | None = None) -> list[tuple[str, Image.Image]]:
    """The (name, image) of each decodable item of at least MIN_SIDE pixels a side, in order. A
    copy of an earlier image is skipped, so that a distractor is never a copy of an original:
    the same bytes; a PDQ hash within SAME_PICTURE bits of it or of its mirror images and quarter
    turns, which the suite's flip and rotate edits make (a 'b' drawn flipped is a 'd'); or the
    same drawing with a part changed (a dreidel with another letter, a recoloured stamp), which
    its keypoints fit as the service's `keypoints` threshold counts a copy (`same_drawing`)."""
    from ..storage import sha256_hex

    images, seen, hashes, features = [], set(), [], []
    for name, data in items:
        if limit is not None and len(images) >= limit:
            break
        digest = sha256_hex(data)
        try:
            image = thumbnail(data)
        except MediamatchError:
            continue
        if min(image.size) < MIN_SIDE or digest in seen:
            continue
        variants = picture_hashes(image)
        if closest(variants, hashes) <= SAME_PICTURE:
            continue
        query = verify.query_features(image)  # the image's keypoints and its mirror image's
        if same_drawing(query, features):
            continue
        seen.add(digest)
        if variants[0] is not None:
            hashes.append(variants[0])
        features.append(query[0])
        images.append((name, image))
    return images


def same_drawing(query: tuple, kept: Sequence) -> bool:
    """Whether an image's keypoints or its mirror image's (`verify.query_features`) fit one of
    `kept` with as many inliers as a `keypoints` match needs: about 1 ms a kept image."""
    from ..signals.keypoints import inliers_of

    least = inliers_of(get_signal_type("keypoints").default_threshold)
    return any(verify.verify(query, other).inliers >= least for other in kept)


def picture_hashes(image: Image.Image) -> list[str | None]:
    """PDQ of an image, then of its mirror images and quarter turns: what the suite's flip and
    rotate edits make of it (None where too flat to hash)."""
    pdq = get_signal_type("pdq")
    return [pdq.compute_image(view).value for view in (image.copy(), *(image.transpose(t) for t in Image.Transpose))]


def closest(variants: Sequence[str | None], hashes: Sequence[str]) -> float:
    """PDQ bits between the nearest of an image's `picture_hashes` and the nearest of `hashes`."""
    pdq = get_signal_type("pdq")
    return min((pdq.distance(v, h) for v in variants if v is not None for h in hashes), default=float("inf"))


def encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def split(images: list, originals: int, distractors: int) -> tuple[list, list]:
    if len(images) < originals + distractors:
        raise InvalidInput(f"{len(images)} images, fewer than {originals} originals + {distractors} distractors")
    return images[:originals], images[originals : originals + distractors]


def make_queries(originals: Sequence[Image.Image], distractors: Sequence[Image.Image], seed: int,
                 edits: Iterable[str] = EDITS) -> Iterator[Query]:
    """Every original and every distractor under every edit; overlays draw from the distractors."""
    pool = list(distractors) or list(originals)
    items = [*((o, j, f"original {j}") for j, o in enumerate(originals)), *((d, None, f"distractor {j}") for j, d in enumerate(distractors))]
    for name in edits:
        edit = EVAL_EDITS[name]
        for i, (image, truth, item) in enumerate(items):
            rng = random.Random(f"{seed}/{name}/{i}")
            yield Query(encode(edit(image, rng, pool)), name, truth, item)


def material(originals: Sequence[Image.Image], distractors: Sequence[Image.Image], seed: int = 0,
             edits: Iterable[str] = EDITS, notes: Sequence[str] = ()) -> Material:
    edits = list(edits)
    return Material("photo", [encode(im) for im in originals], [f"photo {i}" for i in range(len(originals))],
                    lambda: make_queries(originals, distractors, seed, edits), len(edits) * (len(originals) + len(distractors)),
                    len(distractors), [*notes, f"Edits PDQ is built for: {', '.join(PDQ_FRIENDLY)}."])


def load(sources: Sequence[str], originals: int, distractors: int, seed: int = 0, edits: Iterable[str] = EDITS) -> Material:
    """The distinct images under `sources` (`load_images`), shuffled, split into
    banked originals and distractors."""
    images = [im for _, im in load_images(sources, seed=seed)]
    random.Random(seed).shuffle(images)
    banked, never = split(images, originals, distractors)
    note = (f"Images under {', '.join(sources)} (at most {MAX_SIDE} px a side; smaller than {MIN_SIDE} px and copies of "
            f"another image, the same bytes or PDQ within {SAME_PICTURE} bits of it, its mirror images or quarter turns, left out): {len(banked)} originals banked, "
            f"{len(never)} distractors; every one under each edit of `models.edits.EVAL_EDITS`.")
    return material(banked, never, seed, edits, [note])


def photograph_files() -> dict[str, list[Path]]:
    """The real photographs installed here, per where they come from (empty where not installed;
    scikit-image and scikit-learn come with the test extra)."""
    found = {
        "Debian opencv-doc (examples)": [OPENCV_EXAMPLES / n for n in OPENCV_PHOTOS],
        "Debian palapeli-data": sorted(PALAPELI_PHOTOS.glob("*.jpg")),
    }
    try:
        import skimage

        found["scikit-image samples"] = [Path(skimage.__file__).parent / "data" / n for n in SKIMAGE_PHOTOS]
        from sklearn.datasets import load_sample_images

        found["scikit-learn samples"] = [Path(f) for f in load_sample_images().filenames]
    except ImportError:
        pass
    return {origin: [p for p in paths if p.is_file()] for origin, paths in found.items()}


def load_photographs(originals: int, distractors: int, seed: int = 0, edits: Iterable[str] = EDITS) -> Material:
    """The real photographs installed (`photograph_files`), each a distinct picture, shuffled
    and split into banked originals and distractors: at most half of them each."""
    files = photograph_files()
    images = [im for _, im in distinct((str(p), p.read_bytes()) for paths in files.values() for p in paths)]
    random.Random(seed).shuffle(images)
    half = len(images) // 2
    if not half:
        raise InvalidInput("no real photographs installed: `make testdata` installs opencv-doc and palapeli-data")
    banked, never = split(images, min(originals, half), min(distractors, half))
    origins = ", ".join(f"{origin} ({len(paths)})" for origin, paths in files.items() if paths)
    note = (f"Real photographs only: {origins}; {len(images)} distinct pictures at most {MAX_SIDE} px a side (the same check "
            f"as the drawings'): {len(banked)} originals banked, {len(never)} distractors; every one under each edit.")
    return material(banked, never, seed, edits, [note])


def evaluate(originals: Sequence[Image.Image], distractors: Sequence[Image.Image], matcher: Matcher, seed: int = 0,
             edits: Iterable[str] = EDITS, progress: Progress | None = None) -> EvalResult:
    """Photo match quality of `matcher` (the training job's evaluation of a model)."""
    return evaluate_material(material(originals, distractors, seed, edits), matcher, progress)
