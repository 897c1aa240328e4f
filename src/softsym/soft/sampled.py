"""Sampled function-level penalty: E_g ||f(rho_in(g) x) - rho_out(g) f(x)||^2 for any model.

One residual per candidate group of a :class:`~softsym.soft.symmetry.SoftSymmetry`; the training loss adds
``symmetry.penalty(penalty.residuals(model, x))``.
"""
from __future__ import annotations

import logging
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import ConfigError, DataError, ModelError, RepError
from ..metrics import (_check_output, call_model, check_seed, check_spread, finite_elements, model_dtype_device,
                       require_real_finite)
from ..reps.algebra import parse_rep
from ..reps.base import Rep
from .symmetry import SoftSymmetry, as_symmetry

__all__ = ["SampledPenalty", "bind_reps", "check_inputs", "check_residuals", "check_normalize", "residual_scale",
           "NORMALIZE_MODES", "pick_reps", "penalty_seed", "same_randomness"]

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


def pick_reps(plural, singular, name: str, who: str):
    """A penalty's ``rep_ins`` (or ``rep_outs``), also accepted under the metrics' name ``rep_in`` (``rep_out``)."""
    if plural is not None and singular is not None:
        raise ConfigError(f"{who} got both {name}s= and {name}= (the same argument under two names); give it once")
    if plural is None and singular is None:
        raise ConfigError(f"{who} needs the model's {name} (e.g. 'V' or '5V0+5V'), third and fourth after the "
                          f"symmetry, or as {name}=")
    return plural if plural is not None else singular


def penalty_seed(seed):
    """A penalty's sampler seed: ``seed`` if given, else one drawn from torch's global generator, so that
    ``torch.manual_seed`` makes a run reproducible (fresh OS entropy made every run differ)."""
    seed = check_seed(seed)
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,), device="cpu").item())
    return seed


class same_randomness:
    """Context for the extra forward passes of a penalty on a model in training mode: every pass starts from the
    torch RNG state of the original forward (``start``), so dropout draws the same masks for f(x) and f(g x); on
    exit the RNG is left where the original forward left it (``end``, the state on entry: with ``start`` None the
    original forward runs inside the context, and the penalty consumes no randomness at all). Normalisation
    layers' running statistics (BatchNorm) are restored on exit, so the extra batches do not leak into them."""

    def __init__(self, model, start=None):
        self.model = model
        self.active = isinstance(model, torch.nn.Module) and model.training
        self.start = start

    @staticmethod
    def rng_state(device=None):
        """Torch's CPU RNG state, plus the CUDA one of ``device`` (None when there is no CUDA device to track)."""
        cuda = None
        if device is not None and torch.device(device).type == "cuda":
            cuda = torch.cuda.get_rng_state(torch.device(device))
        return torch.get_rng_state(), cuda, device

    @staticmethod
    def set_rng_state(state) -> None:
        cpu, cuda, device = state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, torch.device(device))

    def __enter__(self):
        if not self.active:
            return self
        self.device = next((p.device for p in self.model.parameters()), None)
        self.end = self.rng_state(self.device)
        if self.start is None:
            self.start = self.end
        self.stats = [(t, t.detach().clone()) for m in self.model.modules()
                      if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.track_running_stats
                      for t in (m.running_mean, m.running_var, m.num_batches_tracked) if t is not None]
        return self

    def rewind(self) -> None:
        """Before each extra forward pass: the RNG state of the original one."""
        if self.active:
            self.set_rng_state(self.start)

    def __exit__(self, *exc):
        if self.active:
            self.set_rng_state(self.end)
            for t, saved in self.stats:  # through .data: no version bump (BatchNorm's backward saved them)
                t.data.copy_(saved)
        return False


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
    return call_model(model, x, "SampledPenalty")


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

    In training mode every transformed forward pass replays the torch RNG state of the forward on x (dropout draws
    the same masks for f(x) and f(g x), so dropout noise is not measured as symmetry breaking), leaves the RNG
    where that forward left it, and BatchNorm running statistics are restored after the extra passes.

    Parameters
    ----------
    symmetry : SoftSymmetry holding the candidate groups and strengths (or the groups: a list of specs).
    rep_ins, rep_outs : a rep spec / unbound Rep bound to every candidate, or one rep per candidate (also
        accepted as ``rep_in=`` / ``rep_out=``).
    n_samples : group elements per input row and call.
    seed : seed of the element sampler (numpy Generator kept across calls); None draws it from torch's global
        generator (so ``torch.manual_seed`` makes runs reproducible).
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

    def __init__(self, symmetry: SoftSymmetry, rep_ins=None, rep_outs=None, n_samples: int = 1, *,
                 seed: Optional[int] = None, spread: Optional[float] = None, detach_target: bool = False,
                 normalize: str = "none", rep_in=None, rep_out=None) -> None:
        symmetry = as_symmetry(symmetry, "SampledPenalty")
        rep_ins = pick_reps(rep_ins, rep_in, "rep_in", "SampledPenalty")
        rep_outs = pick_reps(rep_outs, rep_out, "rep_out", "SampledPenalty")
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
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(penalty_seed(seed))
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

    def residuals(self, model: Callable, x: torch.Tensor, fx: Optional[torch.Tensor] = None,
                  rng_before=None) -> torch.Tensor:
        """Residuals (J,), differentiable w.r.t. the model's parameters.

        x : inputs (B, n_in) in any float dtype (cast to the model's dtype for the calls).
        fx : optional precomputed model(x) (B, n_out) (e.g. from the task loss) to save one forward pass.
        rng_before : with ``fx``, the torch RNG state (``same_randomness.rng_state``) from just before fx was
            computed, so the transformed passes replay its dropout masks.
        """
        check_inputs(x, self.n_in, "SampledPenalty")
        mdtype, _ = model_dtype_device(model, x)
        b, s = x.shape[0], self.n_samples
        x64 = x.detach().to(torch.float64)
        res = []
        with same_randomness(model, rng_before if fx is not None else None) as rand:
            if fx is None:  # inside: this pass, too, leaves no trace in the RNG or the BatchNorm statistics
                fx = _model_call_raw(model, x.to(mdtype))
            f64 = _check_output(fx, b, self.n_out, self.rep_outs[0], check_finite=False).to(torch.float64)
            out_dtype = fx.dtype if fx.is_floating_point() else torch.float64
            norm = residual_scale(self.normalize, f64)
            fs = f64.detach() if self.detach_target else f64
            chunks = s if rand.active else 1  # with randomness replayed, one pass per B rows keeps the masks' shape
            xs, fs = x64.repeat(s // chunks, 1), fs.repeat(s // chunks, 1)
            for j, (rin, rout) in enumerate(zip(self.rep_ins, self.rep_outs)):
                g = self._sample(j, b * s, x.device)  # (s*B, d, d), one element per row
                total = 0.0
                for gc in g.chunk(chunks):
                    rand.rewind()
                    a = _model_call(model, rin.rho(gc).apply(xs).to(mdtype), self.n_out, rout)
                    total = total + (a - rout.rho(gc).apply(fs)).pow(2).sum(1).mean()
                res.append(total / chunks / norm)
        return check_residuals(torch.stack(res), "SampledPenalty").to(out_dtype)

    def __call__(self, model: Callable, x: torch.Tensor, fx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``symmetry.penalty(residuals(model, x))``: the scalar to add to the loss."""
        r = self.residuals(model, x, fx)
        return self.symmetry.penalty(r)
