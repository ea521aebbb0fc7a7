"""The image copy-detection descriptor: a small residual CNN with GeM pooling and an
L2-normalised projection, after SSCD (Pizzi et al., 2022) scaled down to train on a CPU.

A model is two files: `config.json` (a `DescriptorConfig`: the architecture and what the
evaluation measured, including the calibrated match threshold) and `weights.pt` (a torch
state dict, stored in float16 to keep the shipped default at a few MB).
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .config import DescriptorConfig

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = None
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.skip is None else self.skip(x)))


class GeM(nn.Module):
    """Generalised-mean pooling with a learned exponent (p=1: average, p→∞: max)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))

    def forward(self, x):
        return x.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class Descriptor(nn.Module):
    def __init__(self, config: DescriptorConfig):
        super().__init__()
        if config.architecture != "resnet_gem":
            raise ValueError(f"unknown descriptor architecture {config.architecture!r}")
        self.config = config
        w = config.widths
        layers: list[nn.Module] = [nn.Conv2d(3, w[0], 3, 2, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True)]
        c_in = w[0]
        for c_out, n in zip(w, config.blocks):
            for i in range(n):
                layers.append(Block(c_in, c_out, 2 if i == 0 else 1))
                c_in = c_out
        self.body = nn.Sequential(*layers)
        self.pool = GeM(config.gem_p)
        self.project = nn.Linear(c_in, config.dim)

    def forward(self, x):
        return F.normalize(self.project(self.pool(self.body(x))), dim=1)


def to_tensor(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """RGB images as a normalised (n, 3, size, size) batch (squashed to a square: aspect is not kept)."""
    arrays = np.stack([np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8) for im in images])
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(255)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


class ImageDescriptor:
    """A loaded model, ready to embed images (on the GPU when torch sees one)."""

    def __init__(self, config: DescriptorConfig, state: dict | None = None, device: str | None = None):
        self.config = config
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = Descriptor(config)
        if state is not None:
            self.model.load_state_dict({k: v.float() for k, v in state.items()})
        self.model.to(self.device).eval()

    @classmethod
    def from_bytes(cls, config_json: bytes | str, weights: bytes) -> "ImageDescriptor":
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        return cls(DescriptorConfig.model_validate_json(config_json), state)

    def weights_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in self.model.state_dict().items()}, buffer)
        return buffer.getvalue()

    @torch.inference_mode()
    def embed(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        out = [
            self.model(to_tensor(images[i : i + batch_size], self.config.input_size).to(self.device)).float().cpu().numpy()
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.config.dim), dtype=np.float32)
