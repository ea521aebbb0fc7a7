"""The calibrated fusion of photo evidence (platform/fusion.py) and the eval's verification
stage: the fused ranking loses to no single signal on any edit of the tiny material, verified
keypoints are a signal of the eval, retrieval recall is reported, and a fusion stored with a
model is the one the eval uses."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mediamatch.platform.evaluation import LocalMatcher, evaluate
from mediamatch.platform.evaluation.core import RETRIEVED, rank
from mediamatch.platform.fusion import Fusion
from mediamatch.platform.models.config import DescriptorConfig
from mediamatch.platform.models.edits import EVAL_EDITS
from mediamatch.platform.settings import VerifySettings
from mediamatch.platform.signals import get_signal_type
from mediamatch.platform.signals.image_embedding import ImageEmbedding

SIGNALS = ("pdq", "image_embedding", "keypoints")


def matcher(fusion: Fusion | None = None) -> LocalMatcher:
    return LocalMatcher([get_signal_type("pdq"), ImageEmbedding(), get_signal_type("keypoints")], fusion=fusion)


def evaluated(originals, distractors, seed: int):
    m = matcher()
    try:
        return evaluate(originals, distractors, m, seed=seed)
    finally:
        m.close()


@pytest.fixture(scope="module")
def tiny(photos):
    """The whole suite over 6 banked photos and 6 distractors, through the verifying matcher."""
    return evaluated(photos[:6], photos[6:12], seed=2)


@pytest.fixture(scope="module")
def calibration(photos):
    """Held-out calibration material: 12 other photos, other seeds; its fusion, as a model stores it."""
    fitted = evaluated(photos[12:18], photos[18:24], seed=3).fusion
    return DescriptorConfig.model_validate_json(DescriptorConfig(fusion=fitted).model_dump_json()).fusion


def test_fusion_loses_to_no_single_signal_on_any_edit(tiny, calibration):
    """The fusion fitted on the calibration material ranks the tiny material's every edit at
    least as well as the best single signal, on µAP and on recall at precision 0.99."""
    result = rank(tiny.answers, list(SIGNALS), tiny.thresholds, calibration, content_type="photo")
    summary = result.summary()
    assert result.combined_by == "the model's stored fusion" and set(summary["per_edit"]) == set(EVAL_EDITS)
    for edit, by in summary["per_edit"].items():
        for metric in ("micro_ap", "recall_at_p99"):
            best = max(by[n][metric] for n in SIGNALS)
            assert by["combined"][metric] >= best, (edit, metric, {n: by[n][metric] for n in by})
    overall = summary["signals"]
    for metric in ("micro_ap", "recall_at_p99"):
        assert overall["combined"][metric] >= max(overall[n][metric] for n in SIGNALS)
    assert overall["combined"]["precision_at_threshold"] >= 0.99  # the stored threshold holds on other material


def test_verified_keypoints_are_a_signal_and_retrieval_is_reported(tiny):
    summary = tiny.summary()
    keypoints = summary["signals"]["keypoints"]
    assert keypoints["distance_at_p99"] is not None and keypoints["answered_false"] == 0
    assert summary["thresholds"]["keypoints"] == get_signal_type("keypoints").default_threshold
    assert summary["per_edit"]["rotate"]["keypoints"]["micro_ap"] > summary["per_edit"]["rotate"]["pdq"]["micro_ap"]
    assert summary["retrieval_k"] == 20 and set(summary["retrieval_recall"]) == set(EVAL_EDITS)
    assert summary["retrieval_recall"]["resize"] == 1.0  # 6 banked: every one is a candidate of the descriptor


def test_retrieval_is_what_was_verified(photos):
    """A bank larger than the candidates verified: a query's candidates are the descriptor's 5
    nearest and PDQ's within the verifier's radius, and a copy's original is among its own."""
    m = LocalMatcher([get_signal_type("pdq"), ImageEmbedding(), get_signal_type("keypoints")], verify=VerifySettings(candidates=5))
    try:
        ids = m.bank([_png(p) for p in photos[:20]])
        copy, other = m.match([_png(EVAL_EDITS["crop"](photos[3], random.Random(0), photos[20:])), _png(photos[20])])
        assert ids[3] in dict(copy[RETRIEVED]) and 5 <= len(other[RETRIEVED]) < 20
        assert copy["keypoints"][0][0] == ids[3] and all(0 <= d < 1 for _, d in copy["keypoints"])
        assert {e for e, _ in copy["keypoints"]} <= {e for e, _ in copy[RETRIEVED]}
        assert len(copy["image_embedding"]) == m.k  # the signals' own answers stay the eval's k
    finally:
        m.close()


def _png(image) -> bytes:
    from mediamatch.platform.evaluation import encode

    return encode(image)


def test_fit_is_monotone_honours_the_radius_and_keeps_its_precision():
    rng = np.random.default_rng(0)
    copies = [{"pdq": float(rng.integers(0, 40)), "keypoints": float(rng.uniform(0, 0.7))} for _ in range(60)]
    others = [{"pdq": float(rng.integers(20, 130)), **({"keypoints": 0.97} if i % 3 == 0 else {})} for i in range(200)]
    fusion = Fusion.fit(copies + others, [True] * 60 + [False] * 200, radius={"pdq": 63})
    assert all(w <= 0 for w in fusion.weights.values()) and fusion.threshold is not None
    closer = fusion.scores([{"pdq": d, "keypoints": 0.5} for d in (0, 10, 30, 60)])
    assert np.all(np.diff(closer) <= 0)  # farther never scores higher
    assert fusion.scores([{"pdq": 100.0}])[0] == fusion.scores([{}])[0]  # beyond the radius: not found
    decided = fusion.decide(copies + others)
    assert decided[:60].sum() / max(1, decided.sum()) >= 0.99
    again = DescriptorConfig.model_validate_json(DescriptorConfig(fusion=fusion).model_dump_json()).fusion
    assert np.allclose(again.scores(copies + others), fusion.scores(copies + others))


def test_a_stored_fusion_scores_and_decides_the_combined_ranking(tiny, calibration):
    """What `LocalMatcher(fusion=...)` (the CLI: the model's stored fusion) hands the eval:
    the combined ranking is that fusion's scores, its served answers that fusion's decisions;
    without one, the eval cross-fits its own and says so."""
    assert tiny.combined_by == "cross-fitted" and tiny.fusion is not None
    again = rank(tiny.answers, list(SIGNALS), tiny.thresholds, calibration, content_type="photo")
    pairs = tiny.answers.pairs()
    assert np.allclose(np.sort(again.rankings["combined"].scores), np.sort(calibration.scores(pairs.evidence)))
    assert again.rankings["combined"].at_threshold()[0] == int((calibration.decide(pairs.evidence) & pairs.correct).sum())


def test_the_photo_decision_of_one_query_from_its_hits():
    """What the match route decides from a query's hits: an entry's evidence gathered over the
    signals that found it, accepted at the fusion's threshold."""
    copies = [{"pdq": 4.0 * i, "keypoints": 0.3} for i in range(10)] + [{"keypoints": 0.2}] * 5
    others = [{"pdq": 90.0 + i} for i in range(40)] + [{"keypoints": 0.97}] * 20
    fusion = Fusion.fit(copies + others, [True] * 15 + [False] * 60)
    evidence = fusion.gathered({"pdq": [("a", 2.0), ("b", 95.0), ("c", 91.0)], "keypoints": [("a", 0.3), ("c", 0.97)]})
    assert evidence == {"a": {"pdq": 2.0, "keypoints": 0.3}, "b": {"pdq": 95.0}, "c": {"pdq": 91.0}}  # c's 0.97: beyond keypoints' radius
    decided = dict(zip(evidence, fusion.decide(list(evidence.values()))))
    assert decided == {"a": True, "b": False, "c": False}
    assert fusion.gathered({}) == {}
