"""Geometric verification: copies under crops, turns, flips, pads and screenshots fit their
original with many inliers, other photos do not; images without keypoints give no evidence;
the stored form is compact and strictly parsed."""

import random

import numpy as np
import pytest
from PIL import Image

from mediamatch.platform import verify
from mediamatch.platform.errors import InvalidInput
from mediamatch.platform.models.edits import EVAL_EDITS

# Measured on scikit-image's photos and openclipart drawings (benchmarks/bench_verify.py):
# non-copies' best candidate stays near 3 inliers (at most ~15), copies have dozens to hundreds.
COPY = 40
NOT_A_COPY = 20


@pytest.fixture(scope="module")
def banked(photos):
    return [verify.extract(p) for p in photos]


@pytest.mark.parametrize("edit, least", [("crop", 6), ("rotate", 6), ("flip", 7), ("pad", 6), ("overlay", 4), ("flip+crop", 6), ("resize", 6)])
def test_copies_verify_and_other_photos_do_not(photos, banked, edit, least):
    """Of 8 copies, at least `least` verify (a screenshot's photo is a small part of it: fewer
    of its keypoints are the photo's); no other photo comes near."""
    verified = 0
    for i, image in enumerate(photos[:8]):  # the rest are what overlays draw on: not banked here
        query = verify.query_features(EVAL_EDITS[edit](image, random.Random(i), photos[8:]))
        scores = [verify.verify(query, b).inliers for b in banked[:8]]
        verified += scores[i] >= COPY
        assert max(s for j, s in enumerate(scores) if j != i) < NOT_A_COPY, (edit, i, scores)
    assert verified >= least, (edit, verified)


def test_a_mirrored_copy_says_so(photos, banked):
    from PIL import ImageOps

    result = verify.verify(verify.query_features(ImageOps.mirror(photos[0])), banked[0])
    assert result.mirrored and result.inliers >= COPY and 0 < result.ratio <= 1
    assert not verify.verify(verify.query_features(photos[0]), banked[0]).mirrored


@pytest.mark.parametrize("size", [(1, 1), (200, 200), (20000, 3), (3, 9000), (31, 400)])
def test_images_without_keypoints_give_no_evidence(photos, banked, size):
    flat = Image.new("RGB", size, (90, 140, 200))
    features = verify.extract(flat)
    assert len(features) == 0 and max(features.size) == verify.SIDE
    assert verify.verify(verify.query_features(flat), banked[0]) == verify.NO_EVIDENCE
    assert verify.verify(verify.query_features(photos[0]), features) == verify.NO_EVIDENCE
    assert not verify.NO_EVIDENCE.evidence
    assert verify.parse(verify.serialize(features)).points.shape == (0, 2)


def test_stored_form_round_trips_compactly(banked):
    features = banked[0]
    value = verify.serialize(features)
    parsed = verify.parse(value)
    assert len(parsed) == len(features) <= verify.MAX_KEYPOINTS
    assert np.array_equal(parsed.descriptors, features.descriptors) and parsed.size == features.size
    assert np.abs(parsed.points - features.points).max() <= 0.25  # float16 at 512 px: a quarter pixel
    assert len(value) <= 4 * -(-36 * verify.MAX_KEYPOINTS // 3) + 40  # 36 bytes a keypoint, base64


def _valid() -> str:
    return verify.serialize(verify.Features(np.array([[1.5, 2.0], [511.0, 100.0]], np.float32), np.full((2, 32), 7, np.uint8), (512, 300)))


@pytest.mark.parametrize("value", [
    None, 3, "", "kp1", _valid().replace("kp1", "kp2"), _valid().replace(":2:", ":3:", 1), _valid().replace(":512:", ":511:", 1),
    _valid().replace(":300:", ":0:", 1), _valid()[:-4], _valid() + "A", _valid().replace(":", "::", 1),
    verify.serialize(verify.Features(np.array([[600.0, 2.0]], np.float32), np.zeros((1, 32), np.uint8), (512, 300))),
    verify.serialize(verify.Features(np.array([[np.nan, 2.0]], np.float32), np.zeros((1, 32), np.uint8), (512, 300))),
    verify.serialize(verify.Features(np.zeros((301, 2), np.float32), np.zeros((301, 32), np.uint8), (512, 512))),
])
def test_parse_refuses_what_is_not_consistent(value):
    with pytest.raises(InvalidInput):
        verify.parse(value)


# -- the keypoints signal and its stored table ------------------------------------------------
from conftest import jpeg  # noqa: E402
from mediamatch.platform.catalog import Catalog, Entry  # noqa: E402
from mediamatch.platform.live import LiveIndex  # noqa: E402
from mediamatch.platform.signals import SIGNAL_TYPES  # noqa: E402

KEYPOINTS = SIGNAL_TYPES["keypoints"]


def test_keypoints_signal_is_stored_not_searched(photos):
    signal = KEYPOINTS.compute(jpeg(photos[0]))
    assert KEYPOINTS.parse(signal.value) == signal.value and not KEYPOINTS.searched and SIGNAL_TYPES["pdq"].searched
    flat = KEYPOINTS.compute(jpeg(Image.new("RGB", (300, 300), "white")))
    assert flat.value is None and "keypoints" in flat.reason
    copy = KEYPOINTS.compute(jpeg(photos[0].crop((20, 20, 200, 180)))).value
    assert KEYPOINTS.distance(copy, signal.value) <= KEYPOINTS.default_threshold < KEYPOINTS.distance(copy, KEYPOINTS.compute(jpeg(photos[1])).value)


def test_stored_keypoints_follow_the_catalog(local_store, photos):
    catalog = Catalog(local_store)
    catalog.create_bank("a")
    values = [KEYPOINTS.compute(jpeg(p)).value for p in photos[:3]]
    x, y, z = catalog.add_entries("a", [Entry(bank="a", content_type="photo", signals={"keypoints": v}) for v in values])
    live = LiveIndex(local_store, KEYPOINTS)
    assert live.values([x.entry_id, y.entry_id, "e_unknown"]) == {x.entry_id: values[0], y.entry_id: values[1]}
    assert live.search(KEYPOINTS.encode(values[:1]), 10, 1.0) == (None, [[]])  # looked up, never searched
    catalog.update_entry("a", x.entry_id, enabled=False)
    catalog.delete_entry("a", y.entry_id)
    assert live.values([x.entry_id, y.entry_id, z.entry_id], min_seq=catalog.seq) == {z.entry_id: values[2]}


def test_reindex_computes_keypoints_from_stored_media(local_store, photos, ray_session):
    from mediamatch.indexing.reindex import reindex
    from mediamatch.platform.settings import Settings

    catalog = Catalog(local_store)
    catalog.create_bank("a")
    media = [jpeg(p) for p in photos[:4]]
    entries = catalog.add_entries("a", [Entry(bank="a", content_type="photo", signals={"pdq": SIGNAL_TYPES["pdq"].compute(m).value},
                                              media=catalog.put_media(m)) for m in media])  # banked before keypoints existed
    manifest = reindex(Settings(storage=local_store.uri), ["keypoints"], store=local_store)["keypoints"]
    assert manifest.count == 4 and manifest.params.type == "stored"
    live = LiveIndex(local_store, KEYPOINTS)
    assert live.status()["version"] == manifest.version and live.status()["live_delta"] == 0
    stored = live.values([e.entry_id for e in entries])
    assert stored == {e.entry_id: KEYPOINTS.compute(m).value for e, m in zip(entries, media)}


def test_verifier_replica_verifies_candidates_from_what_it_follows(local_store, photos):
    """The Verifier deployment's work, without Serve: it looks banked keypoints up by entry id
    (never the media), follows new entries, and an undecodable query is that query's error."""
    from mediamatch.deployments.verifier import Verifier
    from mediamatch.platform.errors import UnsupportedMedia
    from mediamatch.platform.settings import Settings

    catalog = Catalog(local_store)
    catalog.create_bank("a")
    replica = Verifier.func_or_class(Settings(storage=local_store.uri).model_dump(mode="json"))
    entries = catalog.add_entries("a", [Entry(bank="a", content_type="photo", signals={"keypoints": KEYPOINTS.compute(jpeg(p)).value}) for p in photos[:3]])
    ids = [e.entry_id for e in entries]
    from PIL import ImageOps

    query = jpeg(ImageOps.mirror(photos[1]).rotate(10))
    fits = replica.verify_one(query, ids + ["e_unknown"], min_seq=catalog.seq)
    assert set(fits) == set(ids) and fits[ids[1]]["inliers"] >= COPY and fits[ids[1]]["mirrored"]
    assert max(fits[ids[0]]["inliers"], fits[ids[2]]["inliers"]) < NOT_A_COPY
    assert isinstance(replica.verify_one(b"not an image", ids), UnsupportedMedia)
    assert replica.verify_one(jpeg(Image.new("RGB", (64, 64), "red")), ids) == {i: {"inliers": 0, "ratio": 0.0, "mirrored": False} for i in ids}
    replica._stop.set()
