"""Replay-buffer transforms for the SVG family and trajectory-slice buffers."""

from torchrl_svg.data.prioritized import TensorPrioritizedSampler, prioritized_replay_buffer
from torchrl_svg.data.slices import UnflattenSlices, slice_replay_buffer
from torchrl_svg.data.transforms import (
    ImportanceWeight,
    ModelNoiseInference,
    PolicyNoiseInference,
    RandomActionLogProb,
    uniform_log_prob,
)
from torchrl_svg.data.world_model import ModelRollout, NormalizerUpdate

__all__ = [
    "ImportanceWeight",
    "ModelNoiseInference",
    "ModelRollout",
    "NormalizerUpdate",
    "PolicyNoiseInference",
    "RandomActionLogProb",
    "TensorPrioritizedSampler",
    "UnflattenSlices",
    "prioritized_replay_buffer",
    "slice_replay_buffer",
    "uniform_log_prob",
]
