"""What a descriptor model is: its architecture and what its evaluation measured. No torch here:
the service's ingress reads a model's threshold without loading the model."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ..fusion import Fusion


class DescriptorConfig(BaseModel):
    architecture: str = "resnet_gem"
    version: str = "untrained"
    input_size: int = Field(112, ge=32, le=512, description="images are resized to a square of this side")
    widths: list[int] = Field(default_factory=lambda: [32, 64, 128, 256])
    blocks: list[int] = Field(default_factory=lambda: [1, 1, 2, 1])
    dim: int = 256
    gem_p: float = 3.0
    threshold: float | None = Field(None, description="cosine distance at the evaluated precision target")
    threshold_precision: float | None = None
    frame_threshold: float | None = Field(None, description="cosine distance at frame_precision: a video frame this close to a "
                                          "banked frame counts toward a time-aligned video match (see video_embedding)")
    frame_precision: float | None = None
    fusion: Fusion | None = Field(None, description="the calibrated fusion of the photo signals fitted on the held-out evaluation "
                                  "(`platform/fusion.py`): the eval's combined ranking and the photo match decision")
    trained_on: str = ""
    training: dict = Field(default_factory=dict, description="what the training job ran and measured")
    evaluation: dict = Field(default_factory=dict, description="the held-out evaluation's headline figures")


ARCHITECTURE = {"architecture", "input_size", "widths", "blocks", "dim", "gem_p"}  # the fields that shape the weights
