"""Sampled function-level penalty: E_g ||f(rho_in(g) x) - rho_out(g) f(x)||^2 for any model.

One residual per candidate group of a :class:`~softsym.soft.symmetry.SoftSymmetry`; the training loss adds
``symmetry.penalty(penalty.residuals(model, x))``.
"""
from __future__ import annotations

import logging
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import ConfigError, DataError, ModelError, RepError, SoftsymError
from ..metrics import _check_output, check_seed, check_spread, finite_elements, model_dtype_device, require_real_finite
from ..reps.algebra import parse_rep
from ..reps.base import Rep
from .symmetry import SoftSymmetry

__all__ = ["SampledPenalty", "bind_reps", "check_inputs", "check_residuals", "check_normalize", "residual_scale",
           "NORMALIZE_MODES"]

log = logging.getLogger(__name__)

RepSpec = Union[str, Rep]

#: Floor of the output-scale normaliser (mean ||f(x)||^2), so that an all-zero output does not divide by zero.
NORM_EPS: float = 1e-12

#: How a penalty's squared residuals are scaled (see :func:`residual_scale`).
NORMALIZE_MODES = ("none", "output")


def check_normalize(mode, who: str) -> str:
    if mode not in NORMALIZE_MODES:
        raise ConfigError(f"{who}: normalize must be one of {', '.join(map(repr, NORMALIZE_MODES))}, got {mode!r}")
    return mode


def residual_scale(mode: str, f64: torch.Tensor) -> torch.Tensor:
    """Divisor of a penalty's mean squared residual ||.||^2 (summed over the n_out outputs) for model outputs f64.

    "none": n_out, so the residual is a mean squared error per output coordinate, in the same units as an MSE task
    loss (a strength of 1 weighs a symmetry violation like a fitting error of the same size). "output": the batch's
    mean ||f(x)||^2, detached: scale-free, but the model can lower the penalty by shrinking its outputs, and its
    gradient grows like 1 / ||f||^2 as they shrink, which drives small models to constant outputs.
    """
    if mode == "none":
        return f64.new_tensor(float(max(f64.shape[-1], 1)))
    return f64.detach().pow(2).sum(-1).mean().clamp_min(NORM_EPS)


def bind_reps(symmetry: SoftSymmetry, reps: Union[RepSpec, Sequence[RepSpec]], what: str) -> List[Rep]:
    """One Rep per candidate group: a string or unbound Rep is bound to each candidate; a list gives one each.

    A Rep already bound to a group may only be used for that candidate.
    """
    groups = symmetry.groups
    if isinstance(reps, (str, Rep)):
        items = [reps] * len(groups)
    elif not isinstance(reps, (list, tuple)):
        raise ConfigError(f"{what}: expected a rep spec such as 'V' or '5V0+5V', a Rep, or a list with one per "
                          f"candidate; got {type(reps).__name__} {reps!r}")
    else:
        items = list(reps)
        if len(items) != len(groups):
            raise ConfigError(f"{what}: {len(items)} reps given for {len(groups)} candidate groups "
                              f"({', '.join(symmetry.names)}); give one rep (bound to every candidate) or one each")
    out = []
    for spec, g in zip(items, groups):
        if not isinstance(spec, (str, Rep)):
            raise ConfigError(f"{what} for candidate {g.name}: expected a rep spec such as 'V' or '5V0+5V' or a Rep, "
                              f"got {type(spec).__name__} {spec!r}")
        try:
            r = parse_rep(spec)
            out.append(r.bind(g))
        except RepError as exc:
            raise RepError(f"{what} for candidate {g.name}: {exc}") from None
    sizes = {r.size for r in out}
    if len(sizes) != 1:
        raise ConfigError(f"{what} has different sizes for different candidates ({sorted(sizes)}); every candidate "
                          "must act on the same model inputs / outputs")
    return out


def check_inputs(x, n_in: int, who: str) -> None:
    """DataError unless x is a tensor (batch, n_in) of real finite values with at least one row (as the metrics)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != n_in:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{who}: inputs must be (batch, {n_in}), got {shape}")
    if x.shape[0] == 0:
        raise DataError(f"{who}: the batch is empty; a penalty needs at least one input")
    require_real_finite(x, who)


def check_residuals(res: torch.Tensor, who: str) -> torch.Tensor:
    """ModelError for NaN / inf residuals (the model returned NaN or inf on some transformed inputs), so that a
    broken model is not silently trained on a NaN loss; meta tensors pass (shapes only)."""
    if res.device.type != "meta" and not bool(torch.isfinite(res.detach()).all()):
        raise ModelError(f"{who}: the residuals are {res.detach().cpu().tolist()}: the model returned NaN or inf on "
                         "the inputs or their transformed copies; check its forward pass, or lower the learning rate "
                         "if it happens during training")
    return res


def _model_call_raw(model: Callable, x: torch.Tensor):
    try:
        return model(x)
    except SoftsymError:
        raise
    except Exception as exc:
        raise ModelError(f"SampledPenalty: calling the model on inputs of shape {tuple(x.shape)} ({x.dtype}) failed "
                         f"with {type(exc).__name__}: {exc}") from exc


def _model_call(model: Callable, x: torch.Tensor, n_out: int, rep: Rep) -> torch.Tensor:
    y = _model_call_raw(model, x)
    return _check_output(y, x.shape[0], n_out, rep, check_finite=False).to(torch.float64)


class SampledPenalty:
    """Monte-Carlo equivariance penalty, one residual per candidate group.

    R_j = E_x E_{g ~ G_j} ||f(rho_in(g) x) - rho_out(g) f(x)||^2 / n_out

    estimated with ``n_samples`` independent elements per input row (fresh every call; Haar for compact groups,
    uniform for finite ones, polar-decomposition sampler for non-compact ones). Dividing by the number of outputs
    makes R_j a mean squared error per output coordinate, in the units of an MSE task loss.
    ``normalize="output"`` divides by the batch's mean ||f(x)||^2 instead (detached, scale-free); the model can
    then lower the penalty by shrinking its outputs, which with strengths >= ~0.1 drives small models towards
    constant outputs, so it is not the default.

    Parameters
    ----------
    symmetry : SoftSymmetry holding the candidate groups and strengths.
    rep_ins, rep_outs : a rep spec / unbound Rep bound to every candidate, or one rep per candidate.
    n_samples : group elements per input row and call.
    seed : seed of the element sampler (numpy Generator kept across calls).
    spread : spread of non-compact samplers (default softsym.defaults.SAMPLE_SPREAD).
    normalize : "none" (default: mean over outputs) or "output" (relative to the outputs' mean square).

    Group actions are applied in float64; the residuals are returned in the model output's dtype, shape (J,).

    Example
    -------
    >>> import torch, softsym
    >>> from softsym.soft import SoftSymmetry
    >>> from softsym.soft.sampled import SampledPenalty
    >>> sym = SoftSymmetry(["O(3)"], strengths=1.0)
    >>> pen = SampledPenalty(sym, "V", "V")
    >>> model = torch.nn.Linear(3, 3).double()
    >>> pen.residuals(model, torch.randn(8, 3, dtype=torch.float64)).shape
    torch.Size([1])
    """

    def __init__(self, symmetry: SoftSymmetry, rep_ins, rep_outs, n_samples: int = 1, *,
                 seed: Optional[int] = None, spread: Optional[float] = None, detach_target: bool = False,
                 normalize: str = "none") -> None:
        if not isinstance(symmetry, SoftSymmetry):
            raise ConfigError(f"SampledPenalty needs a SoftSymmetry, got {type(symmetry).__name__}")
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ConfigError(f"n_samples must be a positive integer, got {n_samples!r}")
        self.symmetry = symmetry
        self.rep_ins = bind_reps(symmetry, rep_ins, "rep_ins")
        self.rep_outs = bind_reps(symmetry, rep_outs, "rep_outs")
        for g in symmetry.groups:
            if g.is_complex:
                raise ConfigError(f"{g.name} is complex; SampledPenalty supports real groups only")
        self.n_samples = int(n_samples)
        self.spread = None if spread is None else check_spread(spread)
        self.detach_target = bool(detach_target)
        self.normalize = check_normalize(normalize, "SampledPenalty")
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_seed(seed))
        self._finite = [finite_elements(g) for g in symmetry.groups]

    def rng_state(self) -> dict:
        """The element sampler's state (JSON-able), so that a resumed run draws the same elements."""
        return {"numpy": self.rng.bit_generator.state}

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["numpy"]

    @property
    def n_in(self) -> int:
        return self.rep_ins[0].size

    @property
    def n_out(self) -> int:
        return self.rep_outs[0].size

    def _sample(self, j: int, n: int, device) -> torch.Tensor:
        els = self._finite[j]
        if els is not None:  # uniform over the distinct elements of a finite group
            out = torch.from_numpy(np.ascontiguousarray(els[self.rng.integers(0, len(els), n)]))
        else:
            out = self.symmetry.groups[j].sample(n, generator=self.rng, spread=self.spread)
        return out.to(device=device, dtype=torch.float64)

    def residuals(self, model: Callable, x: torch.Tensor, fx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Residuals (J,), differentiable w.r.t. the model's parameters.

        x : inputs (B, n_in) in any float dtype (cast to the model's dtype for the calls).
        fx : optional precomputed model(x) (B, n_out) (e.g. from the task loss) to save one forward pass.
        """
        check_inputs(x, self.n_in, "SampledPenalty")
        mdtype, _ = model_dtype_device(model, x)
        b, s = x.shape[0], self.n_samples
        x64 = x.detach().to(torch.float64)
        if fx is None:
            fx = _model_call_raw(model, x.to(mdtype))
        f64 = _check_output(fx, b, self.n_out, self.rep_outs[0], check_finite=False).to(torch.float64)
        out_dtype = fx.dtype if fx.is_floating_point() else torch.float64
        norm = residual_scale(self.normalize, f64)
        xs = x64.repeat(s, 1)
        fs = f64.repeat(s, 1)
        res = []
        for j, (rin, rout) in enumerate(zip(self.rep_ins, self.rep_outs)):
            g = self._sample(j, b * s, x.device)  # (s*B, d, d), one element per row
            a = _model_call(model, rin.rho(g).apply(xs).to(mdtype), self.n_out, rout)
            target = rout.rho(g).apply(fs.detach() if self.detach_target else fs)
            res.append((a - target).pow(2).sum(1).mean() / norm)
        return check_residuals(torch.stack(res), "SampledPenalty").to(out_dtype)

    def __call__(self, model: Callable, x: torch.Tensor, fx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``symmetry.penalty(residuals(model, x))``: the scalar to add to the loss."""
        r = self.residuals(model, x, fx)
        return self.symmetry.penalty(r)
