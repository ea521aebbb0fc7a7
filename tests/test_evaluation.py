"""The eval harness: pooled-ranking metrics, each content type's material and queries, one
report for every content type, in process and through the service."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import CONFORMANCE
from mediamatch.platform.cli import cli
from mediamatch.platform.errors import InvalidInput
from mediamatch.platform.evaluation import LocalMatcher, Material, Query, Ranking, evaluate, evaluate_material, make_queries
from mediamatch.platform.evaluation import audio, photo, text, video
from mediamatch.platform.evaluation.core import chosen_edits
from mediamatch.platform.signals import get_signal_type
from mediamatch.platform.signals.image_embedding import ImageEmbedding

VIDEOS = CONFORMANCE / "tmk" / "sample-videos"
TMK_SMALL = ("doorknob-hd-no-bar.mp4", "test-padded-dimensions.mp4")  # 4.3 s and 5 s
NO_SPEECH = not shutil.which("espeak-ng")  # then the audio parts are left out


@pytest.fixture(scope="module")
def media(tmp_path_factory, photos, text_corpus):
    """Folders of each content type: 10 photos, two TMK videos, 12 documents of real prose."""
    root = tmp_path_factory.mktemp("media")
    for folder in ("photos", "videos", "docs"):
        (root / folder).mkdir()
    for i, im in enumerate(photos[:10]):
        im.save(root / "photos" / f"{i}.png")
    (root / "photos" / "broken.png").write_bytes(b"not an image")
    for name in TMK_SMALL:
        shutil.copy(VIDEOS / name, root / "videos" / name)
    prose = [" ".join(p.split()) for p in text_corpus if text._good(" ".join(p.split()))]
    assert len(prose) >= 30
    for i in range(0, 40, 4):  # a document gives at most 4 passages
        (root / "docs" / f"README-{i // 4}.txt").write_text("\n\n".join(prose[i : i + 4]) + "\n")
    return root


def test_micro_ap_and_recall_at_precision_by_hand():
    # ranking: correct, wrong, correct, (one true pair never predicted); the first two within the threshold
    r = Ranking("x", np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), positives=3, distances=np.array([1.0, 2.0, 3.0]),
                within=np.array([True, True, False]))
    assert r.micro_ap() == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert r.recall_at_precision(0.99) == (pytest.approx(1 / 3), 0.9, 1.0)
    assert r.recall_at_precision(0.6)[0] == pytest.approx(2 / 3)
    assert r.at_threshold() == (1, 1)
    assert Ranking("none", np.array([]), np.array([], dtype=bool), positives=2).micro_ap() == 0.0


class ScriptedMatcher:
    """Answers each query with the candidates scripted for its content."""

    signal_types = ["pdq", "md5"]

    def __init__(self, answers):
        self.answers = answers

    def bank(self, items):
        return [f"e{i}" for i in range(len(items))]

    def match(self, queries):
        return [self.answers.get(q) for q in queries]

    def threshold(self, name):
        return {"pdq": 31.0, "md5": 0.0}[name]

    def close(self):
        pass


def test_pooled_ranking_counts_every_answer_to_a_distractor_as_false():
    answers = {
        b"copy0": {"pdq": [("e0", 0.0), ("e1", 40.0)], "md5": [("e0", 0.0)]},  # right first, a wrong one far behind
        b"copy1": {"pdq": [("e0", 20.0)], "md5": []},  # only a wrong answer, within the threshold
        b"other": {"pdq": [("e1", 10.0)], "md5": []},  # a distractor: any answer is false
        # b"junk" is refused (None): a copy that can never be found
    }
    queries = [Query(b"copy0", "e", 0), Query(b"copy1", "e", 1), Query(b"other", "e", None), Query(b"junk", "f", 1)]
    material = Material("photo", [b"r0", b"r1"], ["r0", "r1"], lambda: iter(queries), len(queries), 1)
    result = evaluate_material(material, ScriptedMatcher(answers), chunk=3)
    summary = result.summary()
    assert summary["counts"] == {"banked": 2, "distractors": 1, "queries": 4, "true_pairs": 3, "edits": 2, "refused": 1}
    pdq = summary["signals"]["pdq"]
    # pdq ranking: e0 (0, true), other->e1 (10, false), copy1->e0 (20, false), copy0->e1 (40, false); 3 true pairs
    assert result.rankings["pdq"].micro_ap() == pytest.approx(1 / 3)
    assert (pdq["answered_true"], pdq["answered_false"]) == (1, 2)  # 40 bits is beyond pdq's 31
    assert result.rankings["md5"].micro_ap() == pytest.approx(1 / 3)
    # combined is cross-fitted: copies split by original, distractors by ordinal (folds 0, 1, 0, 1); half 0 is scored by
    # the fusion fitted on half 1, which holds no copy (no threshold: it answers nothing), half 1's wrong answer falls
    # below the threshold of half 0's fusion
    assert result.answers.folds == [0, 1, 0, 1] and result.combined_by == "cross-fitted"
    assert (summary["signals"]["combined"]["answered_true"], summary["signals"]["combined"]["answered_false"]) == (0, 0)
    assert result.edit_counts == {"e": (2, 1), "f": (1, 0)}
    assert summary["per_edit"]["f"]["pdq"]["micro_ap"] == 0.0


def test_photo_evaluation_in_process(photos):
    originals, distractors = photos[:6], photos[6:12]
    queries = list(make_queries(originals, distractors, seed=1, edits=["resize", "crop"]))
    assert len(queries) == 2 * 12 and sum(q.truth is not None for q in queries) == 12
    again = list(make_queries(originals, distractors, seed=1, edits=["crop"]))
    assert [q.content for q in again] == [q.content for q in queries[12:]]  # seeded per edit and image
    matcher = LocalMatcher([get_signal_type("pdq"), ImageEmbedding()])
    result = evaluate(originals, distractors, matcher, seed=1, edits=["resize", "jpeg", "crop"])
    matcher.close()
    summary = result.summary()
    assert set(summary["signals"]) == {"pdq", "image_embedding", "combined"}
    assert set(summary["per_edit"]) == {"resize", "jpeg", "crop"}
    assert summary["per_edit"]["jpeg"]["pdq"]["micro_ap"] >= 0.9  # PDQ's home ground
    assert summary["counts"]["true_pairs"] == 18


def test_photo_material_leaves_out_copies_under_the_suites_flips_turns_and_partial_changes(tmp_path, photos):
    originals = photos[:3]
    for i, im in enumerate(originals):
        im.save(tmp_path / f"{i}.png")
    originals[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "mirror.png")  # as a 'b' is a flipped 'd'
    originals[1].transpose(Image.Transpose.ROTATE_90).save(tmp_path / "turned.png")
    originals[2].save(tmp_path / "same.jpg", quality=90)  # other bytes, the same picture
    changed = originals[0].copy()
    changed.paste((255, 0, 0), (0, 0, changed.width // 3, changed.height // 3))  # a part of it painted over
    changed.save(tmp_path / "changed.png")
    kept = {name for name, _ in photo.load_images(str(tmp_path))}
    for picture in ({"0.png", "mirror.png", "changed.png"}, {"1.png", "turned.png"}, {"2.png", "same.jpg"}):
        assert len(kept & picture) == 1, (picture, kept)
    assert len(kept) == 3


def test_photo_material_from_several_folders_holds_a_picture_once(tmp_path, photos):
    """Tux Paint ships the same stamp in two folders: pooled, it is one picture, never banked and
    also a distractor."""
    for folder, pictures in (("people", photos[:2]), ("military", [photos[1], photos[2]])):
        (tmp_path / folder).mkdir()
        for i, im in enumerate(pictures):
            im.save(tmp_path / folder / f"{folder}-{i}.png")
    kept = photo.load_images([str(tmp_path / "people"), str(tmp_path / "military")])
    assert len(kept) == 3
    assert len(photo.load_images(str(tmp_path / "military"))) == 2
    with pytest.raises(InvalidInput, match="3 images"):  # not 4: two banked and two distractors would hold it twice
        photo.load([str(tmp_path / "people"), str(tmp_path / "military")], 2, 2, edits=["jpeg"])


def test_video_and_audio_material_split_seeded_halves(media):
    items, given = video.load([str(media / "videos")], seed=3)
    assert [it.banked for it in items].count(True) == 1 and not given and video.load([str(media / "videos")], seed=3)[0] == items
    material = video.material(items, seed=3, edits=["exact copy"])
    queries = list(material.queries())
    assert material.query_count == len(queries) == 2 and material.distractors == 1
    assert [q.content for q in queries if q.truth == 0] == material.references  # the banked item's exact copy
    assert [q.truth for q in queries if q.content != material.references[0]] == [None]
    assert audio.banked_split(6, 0) == audio.banked_split(6, 0) != audio.banked_split(6, 1) and len(audio.banked_split(7, 0)) == 3
    # --edit narrows the suites it names and leaves the others whole
    assert chosen_edits(["resize", "grayscale", "exact copy"], video.SUITE) == ["exact copy", "grayscale"]
    assert chosen_edits(["resize"], audio.SUITE) == list(audio.SUITE) and chosen_edits((), text.SUITE) == list(text.SUITE)


def test_one_report_for_every_content_type_in_process(tmp_path, media):
    out = tmp_path / "report"
    args = ["--storage", str(tmp_path / "store"), "eval", "--photos", str(media / "photos"), "--photographs", "--originals", "4",
            "--distractors", "4", "--videos", str(media / "videos"), "--text", str(media / "docs"), "--text-bank", "6", "--text-distractors", "6",
            "--text-per-edit", "6", "--signal-type", "pdq", "--signal-type", "image_embedding", "--signal-type", "keypoints",
            "--signal-type", "vpdq", "--signal-type", "md5", "--signal-type", "text_exact", "--signal-type", "text_minhash", "--signal-type", "audio_fingerprint",
            "--edit", "resize", "--edit", "flip", "--edit", "exact copy", "--edit", "downscale 50%", "--edit", "original (wav)",
            "--edit", "mp3 64k", "--edit", "case_punct_space", "--edit", "typos_3pct", "--out", str(out)]
    if not NO_SPEECH:
        args += ["--speech", "2", "--speech-from", str(media / "docs")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    kinds = ["photo", "video", "text"] + ([] if NO_SPEECH else ["audio"])
    report = (out / "eval.md").read_text()
    for kind in kinds:
        assert f"## {kind.title()}" in report
        assert Image.open(io.BytesIO((out / f"eval-{kind}.png").read_bytes())).size[0] > 100
    assert "| resize |" in report and "| exact copy |" in report and "| typos_3pct |" in report
    assert "## Photo: real photographs" in report and "Real photographs only: " in report and (out / "eval-photographs.png").exists()
    assert "| retrieval recall@20 |" in report and "Combined: one calibrated fusion" in report
    results = json.loads((out / "eval.json").read_text())["results"]
    assert set(results) == {*kinds, "photographs"}
    for material in ("photo", "photographs"):
        assert set(results[material]["signals"]) == {"pdq", "image_embedding", "keypoints", "md5", "combined"}  # md5 serves every content type
        assert results[material]["retrieval_k"] == 20 and results[material]["retrieval_recall"]["flip"] == 1.0  # 4 banked: all candidates
        assert results[material]["per_edit"]["flip"]["keypoints"]["recall_at_threshold"] >= 0.75  # the mirrored query verifies
        assert results[material]["counts"]["banked"] == 4 and results[material]["counts"]["queries"] == 2 * 8
        assert results[material]["per_edit"]["flip"]["pdq"]["recall_at_threshold"] == 1.0  # dihedral PDQ: every mirrored copy
    # exact copies are ranked first: an exact signal finds every one, and nothing else
    exact = {"video": ("exact copy", "md5"), "text": ("case_punct_space", "text_exact"), "audio": ("original (wav)", "md5")}
    for kind in kinds[1:]:
        edit, signal = exact[kind]
        row = results[kind]["per_edit"][edit][signal]
        assert row["micro_ap"] == 1.0 and row["recall_at_threshold"] == 1.0 and row["answered_false"] == 0, (kind, row)
    assert results["video"]["per_edit"]["downscale 50%"]["vpdq"]["micro_ap"] == 1.0
    assert results["video"]["signals"]["vpdq"]["answered_false"] == 0  # the distractor answers nothing
    assert results["text"]["per_edit"]["typos_3pct"]["text_exact"]["recall_at_threshold"] == 0.0
    assert results["text"]["signals"]["text_minhash"]["micro_ap"] >= 0.9
    assert results["text"]["counts"]["queries"] == 2 * 6 + 6
    if not NO_SPEECH:
        assert results["audio"]["signals"]["audio_fingerprint"]["micro_ap"] == 1.0
        assert results["audio"]["signals"]["audio_fingerprint"]["answered_false"] == 0


@pytest.mark.parametrize("args, message", [
    (["--photos", "{photos}", "--originals", "40"], "fewer than"),
    (["--photos", "{photos}", "--edit", "nope"], "unknown edit"),
    ([], "nothing to evaluate"),
    (["--videos", "{videos}", "--signal-type", "pdq"], "no --signal-type given serves video"),
    (["--text", "{docs}", "--text-bank", "40"], "passages under"),
    (["--videos", "{photos}"], "no videos"),
])
def test_bad_input_is_one_clear_error(media, tmp_path, args, message):
    args = [a.format(photos=media / "photos", videos=media / "videos", docs=media / "docs") for a in args]
    result = CliRunner().invoke(cli, ["--storage", str(tmp_path / "store"), "eval", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and message in str(result.exception), result.output


def test_eval_through_the_service_cleans_up_its_banks(service, tmp_path, media):
    args = ["eval", str(media / "photos"), "--originals", "4", "--distractors", "4", "--videos", str(media / "videos"),
            "--text", str(media / "docs"), "--text-bank", "5", "--text-distractors", "5", "--text-per-edit", "5",
            "--edit", "jpeg", "--edit", "flip", "--edit", "exact copy", "--edit", "case_punct_space", "--edit", "typos_1pct",
            "--edit", "original (wav)", "--signal-type", "pdq", "--signal-type", "image_embedding", "--signal-type", "vpdq",
            "--signal-type", "md5", "--signal-type", "text_minhash", "--signal-type", "text_embedding", "--signal-type", "audio_fingerprint",
            "--url", service.url, "--token", service.token("admin"), "--out", str(tmp_path / "report")]
    if not NO_SPEECH:
        args += ["--speech", "2", "--speech-from", str(media / "docs")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "through " + service.url in (tmp_path / "report" / "eval.md").read_text()
    results = json.loads((tmp_path / "report" / "eval.json").read_text())["results"]
    assert results["photo"]["per_edit"]["jpeg"]["pdq"]["micro_ap"] >= 0.9 and results["photo"]["counts"]["queries"] == 16
    assert results["photo"]["per_edit"]["flip"]["pdq"]["recall_at_threshold"] == 1.0  # dihedral PDQ through the service too
    assert results["video"]["per_edit"]["exact copy"]["md5"]["micro_ap"] == 1.0
    assert results["video"]["signals"]["vpdq"]["answered_false"] == 0
    assert results["text"]["per_edit"]["case_punct_space"]["text_minhash"]["micro_ap"] == 1.0
    assert results["text"]["signals"]["text_embedding"]["micro_ap"] >= 0.9
    if not NO_SPEECH:
        assert results["audio"]["per_edit"]["original (wav)"]["audio_fingerprint"]["micro_ap"] == 1.0
    assert not [b for b in service.ok("GET", "/v1/banks")["banks"] if b["name"].startswith("eval-")]
