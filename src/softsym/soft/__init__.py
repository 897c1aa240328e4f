"""Soft and mixed symmetry: candidate groups with strengths, penalties and strength tuners."""
from .lie import LiePenalty
from .linear_projection import LinearProjectionPenalty
from .model import SoftModel
from .sampled import SampledPenalty
from .symmetry import SoftSymmetry
from .tuning import PERTuner, SoftTuner, StrengthTuner, make_tuner

__all__ = ["SoftSymmetry", "SampledPenalty", "LiePenalty", "LinearProjectionPenalty", "SoftModel", "PERTuner",
           "SoftTuner", "StrengthTuner", "make_tuner"]
