"""Geometric verification of photo candidates: local features of a query matched against a
banked image's, and a RANSAC fit of one geometric transform through the matches.

Retrieval (PDQ, the descriptor) says which banked photos look alike; this says whether the
query shows the same picture: enough of its keypoints land, under one transform, where the
banked photo has the same local patterns. A crop, a turn, a border, a screenshot of the
photo keep that; two different photos of a similar scene do not. The score is the number of
inlier matches (and their share of the matches).

Features (`extract`): ORB keypoints (oriented FAST + rotated BRIEF, 32-byte binary
descriptors), at most MAX_KEYPOINTS, of the image's grey levels scaled so its longer side is
SIDE pixels: every image is seen at one scale, so the pyramid's 8 levels cover copies from a
quarter to four times the size. ORB is rotation-invariant but not mirror-invariant: a query's
mirror image is described too (`query_features`), and the better of the two fits counts (a
vertical flip is a mirror turned 180 degrees).

Stored form (`serialize` / `parse`): 'kp1:<n>:<width>:<height>:<base64 float16 n x 2
positions>:<base64 n x 32 descriptor bytes>', 36 bytes a keypoint before base64 (48 after),
about 14 KB at 300 keypoints. `parse` is strict: a value it accepts is consistent.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import cv2
import numpy as np
from PIL import Image, ImageOps

from .errors import InvalidInput
from .media import open_image

SIDE = 512  # pixels: the longer side every image is scaled to before keypoints are found
MAX_KEYPOINTS = 300
DESCRIPTOR_BYTES = 32
RATIO = 0.8  # Lowe's ratio test: a match counts when clearly better than the second best
MIN_MATCHES = 6  # fewer ratio-test matches than this: no fit is tried
MIN_SCALE = 0.1  # a fit that shrinks the query (at SIDE) more than this is no copy's: it collapses the picture
MAX_STRETCH = 3.0  # nor one that stretches one way more than 3 times the other (the eval's aspect edit: at most 2)
REPROJECTION = 6.0  # pixels (at SIDE): how far an inlier may land from where the fit puts it
_VALUE = re.compile(r"kp1:(?P<n>\d{1,4}):(?P<w>\d{1,5}):(?P<h>\d{1,5}):(?P<points>[A-Za-z0-9+/]*={0,2}):(?P<descriptors>[A-Za-z0-9+/]*={0,2})")

log = logging.getLogger("ray.serve")  # where the Verifier replica logs
cv2.setNumThreads(1)  # one image at a time per thread: OpenCV's pool only adds contention here


@dataclass(frozen=True)
class Features:
    """Keypoint positions (n x 2 float32, pixels of the scaled image) and their descriptors
    (n x 32 uint8), of an image scaled to `size`."""

    points: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.points)


@dataclass(frozen=True)
class Verification:
    """How well a query fits a banked image: inliers of the best transform, their share of the
    ratio-test matches, and whether the mirrored query fitted."""

    inliers: int = 0
    ratio: float = 0.0
    mirrored: bool = False

    @property
    def evidence(self) -> bool:
        return self.inliers > 0


NO_EVIDENCE = Verification()


def _orb():
    return cv2.ORB_create(nfeatures=MAX_KEYPOINTS, fastThreshold=10)


def scaled_gray(image: Image.Image) -> np.ndarray:
    """The image's grey levels with the longer side SIDE pixels (the shorter at least 1)."""
    scale = SIDE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return np.asarray(image.convert("L").resize(size, Image.BILINEAR))


def extract(image: Image.Image) -> Features:
    """At most MAX_KEYPOINTS ORB keypoints of an image (none for a flat or tiny one)."""
    gray = scaled_gray(image)
    keypoints, descriptors = (None, None) if min(gray.shape) < 32 else _orb().detectAndCompute(gray, None)
    size = (gray.shape[1], gray.shape[0])
    if descriptors is None or not keypoints:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8), size)
    strongest = np.argsort([-k.response for k in keypoints], kind="stable")[:MAX_KEYPOINTS]  # ORB may return a few more
    points = np.array([keypoints[i].pt for i in strongest], np.float32)
    return Features(points, np.ascontiguousarray(descriptors[strongest], np.uint8), size)


def query_features(image: Image.Image) -> tuple[Features, Features]:
    """A query's features, and its mirror image's."""
    return extract(image), extract(ImageOps.mirror(image))


# -- the stored form ----------------------------------------------------------------------------
def serialize(features: Features) -> str:
    pack = lambda a: base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")  # noqa: E731
    w, h = features.size
    return f"kp1:{len(features)}:{w}:{h}:{pack(features.points.astype('<f2'))}:{pack(features.descriptors)}"


def parse(value: Any) -> Features:
    """The features of a stored or client-given value; InvalidInput unless it is consistent
    (its counts, its sizes, positions inside the image)."""
    match = _VALUE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidInput("keypoints must be 'kp1:<n>:<width>:<height>:<base64 float16 n x 2>:<base64 n x 32 bytes>'")
    n, w, h = int(match["n"]), int(match["w"]), int(match["h"])
    if n > MAX_KEYPOINTS or not (0 < w <= SIDE and 0 < h <= SIDE) or max(w, h) != SIDE:
        raise InvalidInput(f"keypoints must hold at most {MAX_KEYPOINTS} points of an image whose longer side is {SIDE}, "
                           f"not {n} of {w}x{h}")
    try:
        points, descriptors = base64.b64decode(match["points"], validate=True), base64.b64decode(match["descriptors"], validate=True)
    except binascii.Error:
        raise InvalidInput("keypoints hold invalid base64") from None
    if len(points) != n * 4 or len(descriptors) != n * DESCRIPTOR_BYTES:
        raise InvalidInput(f"keypoints say {n} points but hold {len(points) // 4} positions and {len(descriptors) // DESCRIPTOR_BYTES} descriptors")
    xy = np.frombuffer(points, "<f2").astype(np.float32).reshape(n, 2)
    if not np.isfinite(xy).all() or (xy < 0).any() or (xy[:, 0] > w).any() or (xy[:, 1] > h).any():
        raise InvalidInput(f"keypoint positions must lie inside the {w}x{h} image")
    return Features(xy, np.frombuffer(descriptors, np.uint8).reshape(n, DESCRIPTOR_BYTES), (w, h))


# -- verifying ----------------------------------------------------------------------------------
_MATCHER = cv2.BFMatcher(cv2.NORM_HAMMING)


def fit(query: Features, banked: Features) -> tuple[int, float]:
    """(inliers, inlier share of the matches) of the best affine map of query keypoints onto
    banked ones, after the ratio test, each banked keypoint matched at most once; (0, 0.0) when
    too few matches or the map is no copy's (it squashes the picture, or stretches one way
    more than MAX_STRETCH times the other)."""
    if len(query) < 2 or len(banked) < 2:
        return 0, 0.0
    pairs = _MATCHER.knnMatch(query.descriptors, banked.descriptors, k=2)
    best: dict[int, cv2.DMatch] = {}
    for p in pairs:
        if len(p) == 2 and p[0].distance < RATIO * p[1].distance and (p[0].trainIdx not in best or p[0].distance < best[p[0].trainIdx].distance):
            best[p[0].trainIdx] = p[0]
    if len(best) < MIN_MATCHES:
        return 0, 0.0
    good = list(best.values())
    src = query.points[[m.queryIdx for m in good]]
    dst = banked.points[[m.trainIdx for m in good]]
    transform, mask = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=REPROJECTION, maxIters=1000,
                                           confidence=0.99, refineIters=0)
    if transform is None or mask is None:
        return 0, 0.0
    stretch = np.linalg.svd(transform[:, :2], compute_uv=False)  # the map's scales along its two axes
    if stretch[1] < MIN_SCALE or stretch[0] > MAX_STRETCH * stretch[1]:
        return 0, 0.0
    inliers = int(mask.sum())
    return inliers, inliers / len(good)


def verify(query: tuple[Features, Features], banked: Features) -> Verification:
    """The better of the query's and its mirror image's fit onto a banked image."""
    direct, mirror = (fit(q, banked) for q in query)
    best, mirrored = (mirror, True) if mirror[0] > direct[0] else (direct, False)
    return Verification(best[0], round(best[1], 4), mirrored) if best[0] else NO_EVIDENCE


def verify_stored(content: bytes, stored: Mapping[str, str], max_pixels: int,
                  parsed: Callable[[str, str], Features] = lambda entry_id, value: parse(value)) -> dict[str, Verification]:
    """The query image's fit onto each candidate's stored keypoints (entry id -> value): what the
    `Verifier` deployment and the eval's matcher answer. A stored value this version cannot read
    gives no evidence, and is logged; a query that is not an image raises (MediamatchError).
    `parsed(entry_id, value)` may cache the banked features."""
    query = query_features(open_image(content, max_pixels))
    out = {}
    for entry_id, value in stored.items():
        try:
            banked = parsed(entry_id, value)
        except InvalidInput as exc:
            log.warning("keypoints of %s not verifiable: %s", entry_id, exc)
            continue
        out[entry_id] = verify(query, banked)
    return out
