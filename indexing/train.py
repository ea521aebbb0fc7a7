"""The descriptor training job: images from object storage (Ray Data) -> contrastive training
(a Ray task, GPU when the cluster has one) -> held-out evaluation and calibration -> a recorded
model version (weights, config, report) in the store.

Steps, each in the progress callback:
1. read the training images with Ray Data and scale them down in `map_batches` (the same
   decoder as the service: `evaluation.thumbnail`); unreadable files are skipped and counted;
2. train in one Ray task (`platform/models/train.py`), from random weights or fine-tuning a
   recorded model (`init`), its progress relayed through a queue;
3. evaluate the trained model, PDQ and verified keypoints on held-out images (originals + distractors, every edit)
   with `LocalMatcher`, and store the cosine distance that keeps precision 0.99 as the model's
   threshold, and the one that keeps precision 0.8 on the same photos seen as video frames
   (grayscale) as its frame threshold, and the fusion of the signals fitted on that evaluation;
4. write config.json, weights.pt and eval.{md,png,json}, then commit the version. It is
   promoted only by `mediamatch model promote`.
`calibrate_model` repeats steps 3-4 for a recorded model on another held-out set.
"""

from __future__ import annotations

import io
import random
import secrets
import tempfile
from pathlib import Path
from typing import Callable

import ray
from ray.util.queue import Empty, Queue

from mediamatch.platform.errors import InvalidInput, MediamatchError
from mediamatch.platform.evaluation import IMAGE_SUFFIXES, LocalMatcher, calibrated_threshold, evaluate, load_images, split, thumbnail, write_report
from mediamatch.platform.models.config import ARCHITECTURE
from mediamatch.platform.models.descriptor import DescriptorConfig, ImageDescriptor
from mediamatch.platform.models.registry import ModelRecord, ModelVersions, resolve_model
from mediamatch.platform.models.train import TrainSettings, train
from mediamatch.platform.settings import Settings
from mediamatch.platform.signals import get_signal_type
from mediamatch.platform.signals.image_embedding import ImageEmbedding
from mediamatch.platform.signals.video_embedding import FrameView
from mediamatch.platform.storage import ObjectStore

Progress = Callable[[float, str], None]
TRAIN_SIDE = 192  # training images are kept at most this large: views are cut from them
PRECISION_TARGET = 0.99
# A video frame needs less: video_embedding matches a video only when many frames agree on one
# time offset, and that check, not each frame, keeps the precision (see docs/eval.md, Video).
# It is calibrated on the photos as video_embedding sees a frame (`FrameView`: grayscale).
FRAME_PRECISION_TARGET = 0.8


def read_training_images(sources: list[str], limit: int | None = None) -> list[bytes]:
    """PNG thumbnails of every decodable image under folders or object-store prefixes (one store)."""
    stores = [ObjectStore(source) for source in sources]
    paths = [store.path(k) for store in stores for k in store.list() if k.lower().endswith(IMAGE_SUFFIXES)][:limit]
    if not paths:
        raise InvalidInput(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {', '.join(sources)}")
    ds = ray.data.read_binary_files(paths, filesystem=stores[0].fs)
    ds = ds.map_batches(_thumbnails, batch_size=64, batch_format="pyarrow")
    return [row["png"] for row in ds.take_all() if row["png"]]


def _thumbnails(batch):
    import pyarrow as pa

    out = []
    for data in batch.column("bytes").to_pylist():
        try:
            buffer = io.BytesIO()
            thumbnail(data, side=TRAIN_SIDE).save(buffer, "PNG", compress_level=1)
            out.append(buffer.getvalue())
        except MediamatchError:
            out.append(b"")  # unreadable or too large: skipped
    return pa.table({"png": pa.array(out, type=pa.binary())})


@ray.remote(max_retries=0)
def _train_task(pngs: list[bytes], config: DescriptorConfig, settings: TrainSettings, queue: Queue, threads: int,
                initial: dict | None) -> tuple[bytes, dict]:
    import torch
    from PIL import Image

    torch.set_num_threads(threads)  # Ray starts workers with one thread for torch, whatever the task asked for

    images = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]
    descriptor, summary = train(images, config, settings, lambda f, m: queue.put_nowait((f, m)), initial)
    return descriptor.weights_bytes(), summary


def train_model(
    settings: Settings,
    sources: list[str],
    holdout: str,
    config: DescriptorConfig = DescriptorConfig(),
    train_settings: TrainSettings = TrainSettings(),
    eval_originals: int = 200,
    eval_distractors: int = 200,
    limit: int | None = None,
    progress: Progress | None = None,
    init: str | None = None,
) -> ModelRecord:
    """Train, evaluate, calibrate and record a descriptor; returns the recorded (unpromoted) version.
    `init`: a model to fine-tune (a version, "promoted", "default" or a folder); its architecture
    replaces `config`'s."""
    report = progress or (lambda fraction, message: None)
    initial = None
    if init is not None:
        start = resolve_model(init, ObjectStore.from_settings(settings))
        config = DescriptorConfig(**start.config.model_dump(include=ARCHITECTURE))
        initial = {k: v.cpu() for k, v in start.model.state_dict().items()}  # to a task on any node
    report(0.0, f"reading images under {len(sources)} sources")
    pngs = read_training_images(sources, limit)
    held_out = load_images(holdout, eval_originals + eval_distractors, seed=train_settings.seed)
    originals, distractors = split([im for _, im in held_out], eval_originals, eval_distractors)
    report(0.05, f"training on {len(pngs)} images")
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    cpus = max(1, min(train_settings.workers + 1, int(ray.cluster_resources().get("CPU", 1))))
    queue = Queue()
    ref = _train_task.options(num_gpus=gpus, num_cpus=cpus).remote(pngs, config, train_settings, queue, cpus, initial)
    while True:
        ready, _ = ray.wait([ref], timeout=1.0)
        try:
            while True:
                fraction, message = queue.get_nowait()
                report(0.05 + 0.75 * fraction, message)
        except Empty:
            pass
        if ready:
            break
    weights, summary = ray.get(ref)
    queue.shutdown()
    config = config.model_copy(update={"trained_on": ", ".join(sources), "training": {**summary, "started_from": init}})
    descriptor = ImageDescriptor.from_bytes(config.model_dump_json(), weights)
    start = f", starting from {init}" if init else ""
    note = f"Trained on {len(pngs)} images from {', '.join(sources)}{start}; {summary['epochs']} epochs in {summary['seconds']:.0f} s."
    return evaluate_and_record(settings, descriptor, holdout, originals, distractors, train_settings.seed, note,
                               lambda f, m: report(0.8 + 0.2 * f, m))


def calibrate_model(settings: Settings, version: str, holdout: str | list[str], eval_originals: int = 200, eval_distractors: int = 200,
                    seed: int = 0, progress: Progress | None = None) -> ModelRecord:
    """Evaluate a model (a version, "promoted" or "default") on another held-out set (one or more
    folders or prefixes, pooled and shuffled as the eval pools its sources) and record it again
    with the thresholds and the fusion that set calls for (the same weights: a threshold depends
    on what the banks hold)."""
    sources = [holdout] if isinstance(holdout, str) else list(holdout)
    descriptor = resolve_model(version, ObjectStore.from_settings(settings))
    images = [im for _, im in load_images(sources, seed=seed)]
    random.Random(seed).shuffle(images)
    originals, distractors = split(images, eval_originals, eval_distractors)
    named = ", ".join(sources)
    return evaluate_and_record(settings, descriptor, named, originals, distractors, seed,
                               f"{version} ({descriptor.config.trained_on}) calibrated again on {named}.", progress)


def evaluate_and_record(settings: Settings, descriptor: ImageDescriptor, holdout: str, originals: list, distractors: list,
                        seed: int, note: str, progress: Progress | None = None) -> ModelRecord:
    """Evaluate the descriptor and PDQ on held-out images, store the cosine distance that keeps
    precision 0.99 as the model's threshold, write the report and record the version."""
    report = progress or (lambda fraction, message: None)
    report(0.0, f"evaluating on {len(originals)} held-out originals + {len(distractors)} distractors")
    matcher = LocalMatcher([get_signal_type("pdq"), ImageEmbedding(descriptor), get_signal_type("keypoints")], settings.limits,
                           verify=settings.verify)
    result = evaluate(originals, distractors, matcher, seed=seed, progress=lambda f, m: report(0.6 * f, f"evaluating: {m}"))
    frames = evaluate(originals, distractors, LocalMatcher([FrameView(descriptor)], settings.limits), seed=seed,
                      progress=lambda f, m: report(0.6 + 0.3 * f, f"evaluating as video frames: {m}"))
    summary = result.summary()
    config = descriptor.config.model_copy(update={
        "threshold": calibrated_threshold(result, "image_embedding", PRECISION_TARGET), "threshold_precision": PRECISION_TARGET,
        "frame_threshold": calibrated_threshold(frames, "image_embedding", FRAME_PRECISION_TARGET), "frame_precision": FRAME_PRECISION_TARGET,
        "fusion": result.fusion.model_copy(update={"fitted_on": holdout}),
        "evaluation": {"holdout": holdout, **summary["signals"]["image_embedding"], "pdq": summary["signals"]["pdq"]}})
    build_id = secrets.token_hex(6)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_report(result, Path(tmp), f"image_embedding build {build_id} on {holdout}", [note])
        files = {"config.json": config.model_dump_json(indent=1).encode(), "weights.pt": descriptor.weights_bytes(),
                 **{p.name: p.read_bytes() for p in paths}}
    record = ModelVersions(ObjectStore.from_settings(settings)).record(build_id, files, config)
    report(1.0, f"recorded {record.version}")
    return record

