"""Equivariant layers and models: EMLP (exact), MLP, RPP (residual pathway prior) and SoftEMLP (PER).

Layers: :class:`EquivariantLinear` (W = Q c from the factored basis), :class:`BiLinear`,
:class:`GatedNonlinearity`, :class:`EMLPBlock`, :class:`RPPLinear`; hidden reps: :func:`uniform_rep`,
:func:`gated`, :func:`gate_indices`. Every model has ``regularization()`` and ``n_parameters``.
The bilinear layer and the gates use hand-written first-order autograd kernels; under ``torch.func`` transforms
(jvp, vmap, ...) and inside :func:`plain_autograd` they switch to plain differentiable torch ops.
"""
from __future__ import annotations

from ._util import plain_autograd
from .bilinear import BiLinear, bilinear_structure
from .gates import GatedNonlinearity
from .linear import EquivariantLinear, RPPLinear
from .models import EMLP, MLP, RPP, EMLPBlock, SoftEMLP
from .projection import ProjectionPlan
from .reps import binomial_allocation, gate_indices, gated, is_permutation_group, lambert_w, rank_counts, uniform_rep

__all__ = [
    "EquivariantLinear", "RPPLinear", "BiLinear", "GatedNonlinearity", "EMLPBlock", "EMLP", "MLP", "RPP",
    "SoftEMLP", "ProjectionPlan", "uniform_rep", "gated", "gate_indices", "lambert_w", "rank_counts",
    "binomial_allocation", "is_permutation_group", "bilinear_structure", "plain_autograd",
]
