"""The image descriptor: edits, training, the model registry and the signal (its evaluation: test_evaluation.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import jpeg
from mediamatch.platform.errors import NotFound
from mediamatch.platform.evaluation import encode
from mediamatch.platform.models.descriptor import DescriptorConfig, ImageDescriptor
from mediamatch.platform.models.edits import EVAL_EDITS, SINGLE_EDITS, random_edit
from mediamatch.platform.models.registry import ModelVersions, default_model_dir, load_from_dir, resolve_model
from mediamatch.platform.models.train import TrainSettings, koleo, nt_xent, train
from mediamatch.platform.signals import get_signal_type

TINY = DescriptorConfig(input_size=32, widths=[8, 16], blocks=[1, 1], dim=256)


def test_every_edit_is_seeded_and_changes_the_image(photos):
    image, pool = photos[0], photos[1:3]
    for name, edit in EVAL_EDITS.items():
        a, b = edit(image, random.Random(7), pool), edit(image, random.Random(7), pool)
        assert a.mode == "RGB" and min(a.size) >= 8, name
        assert encode(a) == encode(b), f"{name} is not determined by its seed"
        assert a.size != image.size or np.abs(np.asarray(a, dtype=int) - np.asarray(image, dtype=int)).mean() > 0.5, name
    assert {"resize", "crop", "rotate", "flip", "jpeg", "blur", "color", "grayscale", "pad", "text", "emoji", "overlay", "aspect"} <= set(SINGLE_EDITS)
    assert any("+" in name for name in EVAL_EDITS)


def test_nt_xent_prefers_matching_views():
    torch = pytest.importorskip("torch")
    z = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    paired = torch.repeat_interleave(z[::2], 2, dim=0)  # rows 2i and 2i+1 identical
    assert nt_xent(paired, 0.1) < nt_xent(z, 0.1)


def test_koleo_penalises_crowded_images_not_a_pair_of_views():
    torch = pytest.importorskip("torch")
    spread = torch.eye(8)  # four images, two views each, all orthogonal
    crowded = spread.clone()
    crowded[2] = torch.nn.functional.normalize(crowded[0] + 0.05 * crowded[2], dim=0)  # image 1 crowds image 0
    views_alike = spread.clone()
    views_alike[1] = views_alike[0]  # image 0's own two views coincide: that is the goal, not a crowd
    assert koleo(crowded) > koleo(spread)
    assert koleo(views_alike) == pytest.approx(koleo(spread).item())


def test_fine_tuning_starts_from_the_given_weights(photos):
    start = ImageDescriptor(TINY)
    settings = TrainSettings(epochs=1, batch_size=8, lr=1e-9, warmup_steps=1, workers=0, koleo=1.0)
    tuned, summary = train(photos[:8], TINY, settings, initial=start.model.state_dict())
    assert summary["fine_tuned"] and np.isfinite(summary["loss_per_epoch"][0])
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    other = ImageDescriptor(TINY)  # another random start
    start_z, tuned_z, other_z = (d.embed(photos[:4]) for d in (start, tuned, other))
    # only batch-norm statistics moved (lr ~ 0): the tuned model is still the one it started from
    assert (start_z * tuned_z).sum(1).min() > 0.98 > (start_z * other_z).sum(1).max()


def test_video_frames_match_within_the_models_frame_threshold():
    from mediamatch.platform.signals.image_embedding import ImageEmbedding
    from mediamatch.platform.signals.video_embedding import VideoEmbedding

    photo_only = ImageDescriptor(TINY.model_copy(update={"threshold": 0.003}))
    with_frames = ImageDescriptor(TINY.model_copy(update={"threshold": 0.003, "frame_threshold": 0.1}))
    assert VideoEmbedding(ImageEmbedding(photo_only)).row_radius == 0.003
    assert VideoEmbedding(ImageEmbedding(with_frames)).row_radius == 0.1


def test_training_lowers_the_loss_and_weights_round_trip(photos):
    descriptor, summary = train(photos[:16], TINY, TrainSettings(epochs=3, batch_size=8, lr=3e-3, warmup_steps=1, workers=0))
    assert summary["steps"] == 6 and len(summary["loss_per_epoch"]) == 3
    assert all(np.isfinite(summary["loss_per_epoch"]))
    again = ImageDescriptor.from_bytes(descriptor.config.model_dump_json(), descriptor.weights_bytes())
    a, b = descriptor.embed(photos[:4]), again.embed(photos[:4])
    assert a.shape == (4, 256) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-4)
    assert np.allclose(a, b, atol=2e-2)  # weights are stored in float16


def test_registry_records_promotes_and_resolves(local_store):
    versions = ModelVersions(local_store)
    d = ImageDescriptor(TINY)
    record = versions.record("b1", {"config.json": TINY.model_dump_json().encode(), "weights.pt": d.weights_bytes()}, TINY)
    assert record.version == "m00000001" and record.config.version == "m00000001"
    assert versions.promoted() is None
    assert resolve_model("promoted", local_store).config.version == load_from_dir(default_model_dir()).config.version
    versions.promote("m00000001")
    assert resolve_model("promoted", local_store).config.version == "m00000001"
    with pytest.raises(NotFound):
        versions.get("m00000009")
    with pytest.raises(NotFound):
        resolve_model("/nonexistent/model", local_store)


def test_default_descriptor_matches_copies_and_not_other_photos(photos):
    signal = get_signal_type("image_embedding")
    assert signal.descriptor.config.threshold is not None, "the packaged model carries a calibrated threshold"
    originals = photos[:12]
    copies = [jpeg(SINGLE_EDITS["jpeg"](im, random.Random(i), [])) for i, im in enumerate(originals)]
    a = signal.encode([s.value for s in signal.compute_batch([jpeg(im) for im in originals])])
    b = signal.encode([s.value for s in signal.compute_batch(copies)])
    distances = 1 - a @ b.T
    assert (np.diag(distances) <= signal.default_threshold).mean() >= 0.9
    off = distances[~np.eye(len(originals), dtype=bool)]
    assert (off > signal.default_threshold).mean() >= 0.98


def test_random_training_views_vary(photos):
    rng = random.Random(3)
    views = {encode(random_edit(photos[0], rng, photos[1:3])) for _ in range(6)}
    assert len(views) >= 5


def test_training_job_records_an_evaluated_calibrated_model(ray_session, tmp_path, photos):
    from click.testing import CliRunner

    from mediamatch.indexing.train import train_model
    from mediamatch.platform.cli import cli
    from mediamatch.platform.settings import Settings

    train_dir, holdout = tmp_path / "train", tmp_path / "holdout"
    for folder, images in ((train_dir, photos[:16]), (holdout, photos[16:24])):
        folder.mkdir()
        for i, im in enumerate(images):
            im.save(folder / f"{i}.jpg")
    (train_dir / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    settings = Settings(storage=str(tmp_path / "store"))
    steps = []
    record = train_model(settings, [str(train_dir)], str(holdout), TINY, TrainSettings(epochs=1, batch_size=8, workers=0),
                         eval_originals=4, eval_distractors=4, progress=lambda f, m: steps.append(f))
    assert record.version == "m00000001" and record.config.training["images"] == 16  # the broken file skipped
    assert record.config.threshold is not None and record.config.threshold_precision == 0.99
    assert record.config.frame_precision == 0.8  # a frame's threshold, at lower precision, is never tighter
    assert record.config.frame_threshold is None or record.config.frame_threshold >= record.config.threshold
    assert steps[-1] == 1.0 and steps == sorted(steps)
    fusion = record.config.fusion  # fitted on the held-out evaluation, verified keypoints among its signals
    assert fusion is not None and fusion.fitted_on == str(holdout) and set(fusion.weights) == {"pdq", "image_embedding", "keypoints"}
    names = {key.rsplit("/", 1)[1] for key in record.files}
    assert names == {"config.json", "weights.pt", "eval.md", "eval-photo.png", "eval.json"}

    run = lambda *args: CliRunner().invoke(cli, ["--storage", settings.storage, "model", *args])  # noqa: E731
    listed = run("list")
    assert listed.exit_code == 0 and "m00000001" in listed.output and "none promoted" in listed.output
    assert run("promote", "m00000001").exit_code == 0
    assert "* m00000001" in run("list").output
    export = run("export", "m00000001", str(tmp_path / "exported"))
    assert export.exit_code == 0 and load_from_dir(tmp_path / "exported").config.version == "m00000001"
    missing = run("promote", "m00000007")
    assert missing.exit_code == 1 and "no image_embedding model version" in str(missing.exception)

    tuned = train_model(settings, [str(train_dir)], str(holdout), TINY, TrainSettings(epochs=1, batch_size=8, workers=0, koleo=1.0),
                        eval_originals=4, eval_distractors=4, init="promoted")
    assert tuned.version == "m00000002" and tuned.config.training["fine_tuned"] and tuned.config.training["started_from"] == "promoted"
    calibrated = run("calibrate", "default", "--holdout", str(holdout), "--eval-originals", "4", "--eval-distractors", "4")
    assert calibrated.exit_code == 0 and "m00000003" in calibrated.output
