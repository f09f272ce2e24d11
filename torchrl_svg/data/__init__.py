"""Replay-buffer transforms for the SVG family and trajectory-slice buffers."""

from torchrl_svg.data.transforms import (
    ImportanceWeight,
    ModelNoiseInference,
    ModelRollout,
    NormalizerUpdate,
    PolicyNoiseInference,
    UnflattenSlices,
    slice_replay_buffer,
)

__all__ = [
    "ImportanceWeight",
    "ModelNoiseInference",
    "ModelRollout",
    "NormalizerUpdate",
    "PolicyNoiseInference",
    "UnflattenSlices",
    "slice_replay_buffer",
]
