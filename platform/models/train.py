"""Self-supervised contrastive training of the descriptor (SimCLR's NT-Xent loss).

Each image of a batch is edited twice with `edits.random_edit`; the loss pulls the two views
of one image together and pushes them away from every other image's views in the batch. No
labels: any folder of real images will do. Plain torch, so the training job can run it
anywhere (a Ray task on a GPU node, or this process on a laptop CPU).
"""

from __future__ import annotations

import math
import random
import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import BaseModel, Field

from .descriptor import DescriptorConfig, ImageDescriptor, to_tensor
from .edits import random_edit

Progress = Callable[[float, str], None]


class TrainSettings(BaseModel):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(128, ge=8)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = 1e-4
    temperature: float = Field(0.07, gt=0)
    koleo: float = Field(0.0, ge=0, description="weight of SSCD's entropy (KoLeo) regulariser, which spreads descriptors apart")
    warmup_steps: int = 100
    workers: int = Field(1, ge=0, description="data loader processes making the edited views")
    seed: int = 0


class EditedPairs(torch.utils.data.Dataset):
    """Two independently edited views of each image."""

    def __init__(self, images: Sequence[Image.Image], size: int, seed: int):
        self.images, self.size, self.seed, self.epoch = list(images), size, seed, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        rng = random.Random(hash((self.seed, self.epoch, i)))
        pool = [self.images[rng.randrange(len(self.images))] for _ in range(2)]
        views = [random_edit(self.images[i], rng, pool) for _ in range(2)]
        return to_tensor(views, self.size)


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """z: (2n, d) normalised, rows 2i and 2i+1 the two views of image i."""
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.arange(len(z), device=z.device) ^ 1  # each row's other view
    return F.cross_entropy(sim, target)


def koleo(z: torch.Tensor) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimate (negated), as SSCD uses it: the log distance from each
    descriptor to its nearest neighbour among other images' views (its own other view excluded)."""
    own = torch.arange(len(z), device=z.device)
    excluded = torch.zeros(len(z), len(z), dtype=torch.bool, device=z.device)
    excluded[own, own] = excluded[own, own ^ 1] = True
    distances = torch.cdist(z, z).masked_fill(excluded, float("inf"))
    return -torch.log(distances.min(dim=1).values + 1e-8).mean()


def train(
    images: Sequence[Image.Image],
    config: DescriptorConfig,
    settings: TrainSettings = TrainSettings(),
    progress: Progress | None = None,
    initial: dict | None = None,
) -> tuple[ImageDescriptor, dict]:
    """A trained descriptor and a summary of the run (loss per epoch, throughput). `initial`: a
    state dict to start from (fine-tuning a recorded model) instead of random weights."""
    report = progress or (lambda fraction, message: None)
    torch.manual_seed(settings.seed)
    descriptor = ImageDescriptor(config, initial)
    model, device = descriptor.model, descriptor.device
    data = EditedPairs(images, config.input_size, settings.seed)
    loader = torch.utils.data.DataLoader(
        data, batch_size=settings.batch_size, shuffle=True, drop_last=True, num_workers=settings.workers,
        persistent_workers=False, generator=torch.Generator().manual_seed(settings.seed),
    )
    steps = settings.epochs * len(loader)
    if steps == 0:
        raise ValueError(f"{len(images)} images is fewer than one batch of {settings.batch_size}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / settings.warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    losses, started, step = [], time.monotonic(), 0
    model.train()
    for epoch in range(settings.epochs):
        data.epoch, total = epoch, 0.0
        for views in loader:
            z = model(views.flatten(0, 1).to(device))
            loss = nt_xent(z, settings.temperature)
            if settings.koleo:
                loss = loss + settings.koleo * koleo(z)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, step = total + loss.item(), step + 1
            if step % 10 == 0:
                report(step / steps, f"epoch {epoch + 1}/{settings.epochs} step {step}/{steps} loss {loss.item():.3f}")
        losses.append(round(total / len(loader), 4))
    model.eval()
    seconds = time.monotonic() - started
    summary = {
        "images": len(images), "epochs": settings.epochs, "steps": steps, "device": device,
        "seconds": round(seconds, 1), "views_per_second": round(2 * steps * settings.batch_size / seconds, 1),
        "loss_per_epoch": losses, "settings": settings.model_dump(), "fine_tuned": initial is not None,
    }
    return descriptor, summary
