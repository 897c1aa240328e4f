"""Any model plus a soft-symmetry penalty, as one module the Trainer and the strength tuners can drive.

The tuners and :class:`~softsym.train.Trainer` talk to soft models through ``model.symmetry`` (a SoftSymmetry),
``model.residuals()`` (J,) and ``model.regularization()`` (the penalty to add to the loss), none of which take
inputs. Sampled and Lie-derivative penalties need inputs, so :class:`SoftModel` evaluates them on the last
training batch the model saw (reusing its outputs for the loss term) and on a fixed reference batch otherwise.
"""
from __future__ import annotations

import contextlib
import json
from typing import Iterator, List, Optional

import torch
from torch import nn

from ..errors import ConfigError
from .linear_projection import LinearProjectionPenalty
from .lie import LiePenalty
from .sampled import SampledPenalty, same_randomness

__all__ = ["SoftModel"]

_PENALTIES = (SampledPenalty, LiePenalty, LinearProjectionPenalty)


def _unbound_expr(rep):
    from ..reps.algebra import parse_rep

    return parse_rep(rep).unbound()


class SoftModel(nn.Module):
    """``model`` made softly equivariant by ``penalty`` (SampledPenalty, LiePenalty or LinearProjectionPenalty).

    ``strength_max``: the largest lambda the soft tuner may set (None: its own ``hi``).
    ``full_group``: the candidate the model is meant to be closest to, which the PER tuner leaves unpenalised
    (default: the candidate whose Lie algebra contains every other's, e.g. O(3) among O(3), O(2)@x, O(2)@z).
    Data parallelism (``world_size`` > 1): every process evaluates the penalty on its share of the batch with its
    own draws of group elements, so a sampled (or generator-subsampled Lie) penalty matches a single-process run in
    expectation, not bit for bit as the rest of training does.
    ``rep_in`` / ``rep_out``: the model's input and output reps, taken from a sampled or Lie penalty; give them for
    a LinearProjectionPenalty if the soft tuner is to be used (it measures symmetry on transformed validation data).

    ``forward(x)`` is ``model(x)``; in training mode with gradients on, it also keeps the batch, so that
    ``regularization()`` = ``symmetry.penalty(residuals)`` on that batch (once per forward; the sampled penalty
    reuses the outputs). ``residuals()`` (for tuners and logs) uses the last batch, or the reference inputs set by
    :meth:`set_reference_inputs` (the Trainer passes a training batch before it starts). Strengths live in
    ``penalty.symmetry``, so ``Trainer(SoftModel(net, pen), task, tuner="soft")`` learns them like SoftEMLP's.

    Example
    -------
    >>> import torch, softsym
    >>> from softsym.soft import SoftSymmetry, SampledPenalty, SoftModel
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    >>> soft = SoftModel(net, SampledPenalty(SoftSymmetry(["O(3)", "O(2)@z"]), "V", "V"))
    >>> soft.residuals(torch.randn(8, 3)).shape
    torch.Size([2])
    """

    def __init__(self, model: nn.Module, penalty, *, rep_in=None, rep_out=None,
                 strength_max: Optional[float] = 10.0, full_group=None) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"SoftModel needs a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(penalty, _PENALTIES):
            raise ConfigError(f"SoftModel needs a SampledPenalty, LiePenalty or LinearProjectionPenalty, got "
                              f"{type(penalty).__name__}")
        if isinstance(penalty, LinearProjectionPenalty) and penalty.model is not model:
            raise ConfigError("the LinearProjectionPenalty was declared on another model; build it on this one")
        self.model = model
        self.penalty = penalty
        self.symmetry = penalty.symmetry  # a submodule: strengths move with .to(device) and are checkpointed
        if full_group is not None:
            full_group = self.symmetry.groups[self.symmetry.index(full_group)]  # must be one of the candidates
        self.full_group = full_group
        self._needs_inputs = not isinstance(penalty, LinearProjectionPenalty)
        # the model's input / output reps (the soft tuner transforms validation data with them)
        if rep_in is None and self._needs_inputs:
            rep_in = penalty.rep_ins[0]
        if rep_out is None and self._needs_inputs:
            rep_out = penalty.rep_outs[0]
        self.rep_in_expr = None if rep_in is None else _unbound_expr(rep_in)
        self.rep_out_expr = None if rep_out is None else _unbound_expr(rep_out)
        self.tuner_name: Optional[str] = None
        #: the soft tuner's lambda = strength_scale * (normalised strength); sampled and Lie residuals are mean
        #: squared errors per output, in the task loss's units, so 1 (not 1 / R(theta_0), which is tiny for the
        #: small outputs of a fresh network and would make the strengths explode once it learns)
        self.strength_scale: Optional[float] = 1.0 if self._needs_inputs else None
        #: the soft tuner's cap on lambda: past ~10 a sampled penalty drives an ordinary network towards constant
        #: outputs (MixedInertia o2z, MLP 20-128-128-9, 150 epochs: test MSE 3.5 with the cap 10, 23 without)
        if strength_max is not None and (isinstance(strength_max, bool) or not isinstance(strength_max, (int, float))
                                         or not strength_max > 0):
            raise ConfigError(f"strength_max must be a positive number or None, got {strength_max!r}")
        self.strength_max: Optional[float] = None if strength_max is None else float(strength_max)
        self._batch: Optional[torch.Tensor] = None
        self._batch_out: Optional[torch.Tensor] = None
        self._batch_rng = None  # torch RNG state before the training forward (the penalty replays its dropout)
        self._reference: Optional[torch.Tensor] = None

    @property
    def candidates(self) -> List:
        """The candidate groups (the Trainer measures the equivariance error of each)."""
        return list(self.symmetry.groups)

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``model(x)``; in training mode with gradients on, the batch is also kept for ``regularization()``."""
        keep = self._needs_inputs and self.training and torch.is_grad_enabled()
        rng = same_randomness.rng_state(x.device) if keep and isinstance(self.penalty, SampledPenalty) else None
        if self._needs_inputs and isinstance(x, torch.Tensor) and x.ndim == 2 and x.shape[1] != self.penalty.n_in:
            raise ConfigError(f"SoftModel: inputs have {x.shape[1]} features but the penalty was declared on rep_in "
                              f"{self.penalty.rep_ins[0]!r} of size {self.penalty.n_in}; declare the rep of the "
                              "model's inputs")
        out = self.model(x)
        if keep:
            self._batch, self._batch_out, self._batch_rng = x.detach(), out, rng
        return out

    def set_reference_inputs(self, x: torch.Tensor) -> None:
        """Inputs (B, n_in) on which ``residuals()`` is evaluated before the model has seen a training batch."""
        if not isinstance(x, torch.Tensor) or x.ndim != 2:
            raise ConfigError(f"reference inputs must be a (batch, n_in) tensor, got "
                              f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        self._reference = x.detach()

    def _inputs(self, x: Optional[torch.Tensor]) -> torch.Tensor:
        for cand in (x, self._batch, self._reference):
            if cand is not None:
                return cand
        raise ConfigError("SoftModel.residuals() needs inputs: call the model on a batch first, pass x, or set "
                          "reference inputs with set_reference_inputs(x)")

    def residuals(self, x: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Residuals (J,) of the penalty: on ``x``, else the last training batch, else the reference inputs.

        The penalty's random stream is left where it was (tuners and logs call this between training steps, and a
        resumed run must draw the same group elements for its losses as an uninterrupted one)."""
        if not self._needs_inputs:
            return self.penalty.residuals()
        with self._stream_kept():
            return self.penalty.residuals(self.model, self._inputs(x))

    @contextlib.contextmanager
    def _stream_kept(self) -> Iterator[None]:
        state = self.penalty.rng_state()
        try:
            yield
        finally:
            self.penalty.set_rng_state(state)

    # the penalty's random stream travels with the state dict (the Trainer's checkpoints), as a uint8 tensor
    def get_extra_state(self) -> torch.Tensor:
        if not self._needs_inputs:
            return torch.zeros(0, dtype=torch.uint8)
        return torch.tensor(list(json.dumps(self.penalty.rng_state()).encode()), dtype=torch.uint8)

    def set_extra_state(self, state) -> None:
        if isinstance(state, torch.Tensor) and state.numel() and self._needs_inputs:
            self.penalty.set_rng_state(json.loads(bytes(state.tolist()).decode()))

    def regularization(self) -> torch.Tensor:
        """``symmetry.penalty(residuals)`` on the batch of the last training forward (its outputs reused)."""
        if not self._needs_inputs:
            return self.symmetry.penalty(self.penalty.residuals())
        if self._batch_out is None:
            why = ("the penalty of the last batch was already taken (once per forward pass)" if self._batch is not None
                   else "no training forward pass yet")
            raise ConfigError(f"SoftModel.regularization() follows a training forward pass ({why}): call model(x) in "
                              "training mode (with gradients), then add model.regularization() to the loss once")
        x, out = self._batch, self._batch_out
        self._batch_out = None  # its graph is consumed by this loss
        if isinstance(self.penalty, SampledPenalty):
            return self.symmetry.penalty(self.penalty.residuals(self.model, x, fx=out, rng_before=self._batch_rng))
        return self.symmetry.penalty(self.penalty.residuals(self.model, x))

    def extra_repr(self) -> str:
        """Penalty type and candidate names, for ``repr(model)``."""
        return f"penalty={type(self.penalty).__name__}, candidates={self.symmetry.names}"
