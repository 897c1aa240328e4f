"""Equivariance metrics for any model: sampled (scale-adjusted) errors, Lie derivatives, subspace energy.

All group actions are applied in float64 whatever the model's dtype: inputs are transformed in float64 and cast
to the model's dtype just before the call, outputs are cast back to float64 before rho_out(g) is applied.
Groups and reps may be given as objects or as spec strings (``"O(3)"``, ``"5V0+5V"``).

Functions and their stateful accumulators share the same helpers, so that
``EquivarianceMeter(...).update(f, x1); .update(f, x2); .compute()`` equals
``equivariance_error(f, ..., torch.cat([x1, x2]))`` with the same sampled elements.

Formulas (a = f(rho_in(g) x), b = rho_out(g) f(x), both (B, m) over the batch; rms = root-mean-square over all
B * m entries, ||.|| = Frobenius norm over the batch):

* scale-adjusted relative error (EMLP, Finzi et al. 2021, ``scale_adjusted_rel_err``; ``mean`` / ``max``)::

      err(g) = rms(a - b) / (rms(a) + rms(b) + mean_ij |g - I|_ij)

  The output scales in the denominator make it a relative error; the ``mean |g - I|`` term grows with the size
  of the transformation, so far-from-identity elements of non-compact groups (large boosts, whose transformed
  outputs amplify round-off) are discounted, while for near-identity and compact elements the error is
  essentially the symmetric relative error. By the triangle inequality it never exceeds 1.
* the same error with the floor capped at the output scale (``capped_mean`` / ``capped_max``)::

      err(g) = rms(a - b) / (rms(a) + rms(b) + mean_ij |g - I|_ij * min(1, rms(f(x))))

  EMLP's ``mean |g - I|`` is a floor of one output *unit*: for outputs much smaller than one unit (rms c << 1)
  it dominates the denominator and scales a non-equivariant model's error by ~c (a random linear map times
  1e-12 scores 1e-11 under S(5)). Capping it at the output scale rms(f(x)) (over the untransformed inputs)
  gives EMLP's number for outputs of rms >= 1 and an error independent of the output scale below that; it is
  never smaller than EMLP's. ``softsym.check`` decides its verdicts on it.
* plain relative error: ``||a - b|| / ||f(x)||``.
* Lie derivative (Gruver et al., ICLR 2023) of f along a generator A at t = 0::

      L_A f(x) = d/dt f(exp(tA) x)|_0 - drho_out(A) f(x) = J_f(x) drho_in(A) x - drho_out(A) f(x)

  computed with forward-mode AD (``torch.func.jvp``); reported as ``||L_A f|| / (||f(x)|| ||A||_2)``
  (scale-adjusted) and ``||L_A f|| / ||f(x)||`` (plain), per generator.
* subspace energy of a linear map W: ``||P W||^2 / ||W||^2`` with P the projector onto equivariant maps.

Models that are ``nn.Module`` are put in eval mode during a measurement and restored afterwards.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from . import defaults
from .errors import ConfigError, DataError, GroupError, ModelError, SoftsymError
from .groups.base import Group
from .groups.finite import FiniteGroup
from .groups.parse import parse_group
from .reps.algebra import rep as _make_rep
from .reps.base import Rep
from .reps.basis import Basis

__all__ = [
    "EquivarianceResult",
    "LieDerivativeResult",
    "EquivarianceMeter",
    "LieDerivativeMeter",
    "equivariance_error",
    "lie_derivative",
    "lie_derivative_error",
    "subspace_energy",
    "scale_adjusted_rel_err",
    "rel_err",
    "group_elements",
    "act_each",
    "finite_elements",
    "EXHAUSTIVE_MAX",
    "DEFAULT_N_SAMPLES",
]

log = logging.getLogger(__name__)

#: Finite groups with at most this many elements are checked exhaustively (every element) instead of sampled.
EXHAUSTIVE_MAX: int = 1024

#: Default number of sampled group elements for continuous (or very large finite) groups.
DEFAULT_N_SAMPLES: int = 32

GroupLike = Union[Group, str]
RepLike = Union[Rep, str]


# ====================================================================== result types
@dataclass
class EquivarianceResult:
    """Sampled equivariance error of a model.

    mean, max : scale-adjusted relative error (EMLP) over the sampled elements.
    capped_mean, capped_max : the same with EMLP's floor mean|g - I| capped at the output scale
        min(1, rms f(x)) (equal to mean / max for outputs of rms >= 1; see the module docstring).
    plain_mean, plain_max : ||f(rho_in(g) x) - rho_out(g) f(x)|| / ||f(x)|| over the sampled elements.
    n_samples : number of group elements used; ``exhaustive`` when every element of a finite group was used.
    spread : spread of the non-compact sampler (None for compact groups, sampled Haar / uniformly).
    sampler : human-readable description of how the elements were drawn.
    per_sample : scale-adjusted error of each element (same order as the elements).
    output_rms, input_rms : rms of f(x) and of x over all inputs (float64), see :meth:`negligible_output`.
    """

    mean: float
    max: float
    plain_mean: float
    plain_max: float
    n_samples: int
    spread: Optional[float]
    group: str
    exhaustive: bool = False
    sampler: str = ""
    n_inputs: int = 0
    dtype: str = "torch.float64"
    per_sample: List[float] = field(default_factory=list)
    capped_mean: float = 0.0
    capped_max: float = 0.0
    output_rms: float = math.nan
    input_rms: float = math.nan

    def negligible_output(self, factor: float = 64.0) -> bool:
        """True when rms f(x) <= factor * eps(model dtype) * rms x: the outputs are as small as the round-off of a
        map that is zero on these inputs (e.g. a model averaged onto a zero equivariant space), whose relative
        errors compare round-off with round-off (all-zero inputs: rms f(x) <= factor * eps). A hint only: a model with
        genuinely tiny outputs looks the same."""
        dtype = getattr(torch, self.dtype.replace("torch.", ""), torch.float64)
        eps = torch.finfo(dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float64).eps
        scale = self.input_rms if self.input_rms > 0 else 1.0  # all-zero inputs: judge the outputs in absolute terms
        return bool(math.isfinite(self.output_rms) and self.output_rms <= factor * eps * scale)

    def to_dict(self) -> dict:
        """Every field as a plain dict (JSON-ready), as reports and the CLI store it."""
        return asdict(self)


@dataclass
class LieDerivativeResult:
    """Lie-derivative error of a model along every Lie-algebra generator of a group.

    mean, max : over generators of ||L_A f|| / (||f(x)|| ||A||_2).
    plain_mean, plain_max : over generators of ||L_A f|| / ||f(x)||.
    per_generator : one dict per generator: {"index", "error", "plain", "norm"}.
    method : "jvp" (forward-mode AD), "vjp" (reverse mode twice), "fd" (central finite differences) or "none"
        (no generators).
    A group without a Lie algebra (finite group) gives n_generators = 0 and zeros.
    """

    mean: float
    max: float
    plain_mean: float
    plain_max: float
    per_generator: List[Dict[str, float]]
    n_generators: int
    group: str
    n_samples: int = 0  # number of generators (field kept for symmetry with EquivarianceResult)
    spread: Optional[float] = None
    method: str = "jvp"
    n_inputs: int = 0
    dtype: str = "torch.float64"

    def to_dict(self) -> dict:
        """Every field as a plain dict (JSON-ready), as reports and the CLI store it."""
        return asdict(self)


# ====================================================================== formulas
def _reference_scale(t: torch.Tensor) -> float:
    """max |t| when it is a positive finite number, else 1: a unit for sums of squares that cannot overflow."""
    m = float(t.abs().max()) if t.numel() else 0.0
    return m if math.isfinite(m) and m > 0.0 else 1.0


def _safe_ratio(num: float, den: float) -> float:
    """num / den with 0 / 0 = 0, x / 0 = inf and inf / anything = inf (an overflowed error is never 0)."""
    if num == 0.0:
        return 0.0
    if not math.isfinite(num):
        return math.inf
    if den == 0.0 or not math.isfinite(den):
        return math.inf if den == 0.0 else 0.0
    return num / den


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """EMLP's relative error rms(a - b) / (rms(a) + rms(b)) of two tensors of equal shape."""
    a, b = a.double(), b.double()
    return _safe_ratio(float((a - b).pow(2).mean().sqrt()), float(a.pow(2).mean().sqrt() + b.pow(2).mean().sqrt()))


def scale_adjusted_rel_err(a: torch.Tensor, b: torch.Tensor, g: torch.Tensor, scale: float = 1.0) -> float:
    """Scale-adjusted error rms(a - b) / (rms(a) + rms(b) + mean |g - I| * scale) for one element g (d, d).

    ``scale=1`` is EMLP's formula (``EquivarianceResult.mean``); ``scale=min(1, rms f(x))`` is the capped
    variant (``EquivarianceResult.capped_mean``, see the module docstring)."""
    a, b = a.double(), b.double()
    g = g.double()
    gi = float((g - torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)).abs().mean())
    num = float((a - b).pow(2).mean().sqrt())
    return _safe_ratio(num, float(a.pow(2).mean().sqrt() + b.pow(2).mean().sqrt()) + gi * float(scale))


# ====================================================================== shared helpers
def _resolve(group: GroupLike, rep_in: RepLike, rep_out: RepLike) -> Tuple[Group, Rep, Rep]:
    g = parse_group(group)
    return g, _make_rep(rep_in, g), _make_rep(rep_out, g)


def model_dtype_device(f: Callable, x: Optional[torch.Tensor] = None) -> Tuple[torch.dtype, torch.device]:
    """dtype and device a model expects: its first floating parameter (or buffer), else those of ``x``."""
    if isinstance(f, nn.Module):
        for t in list(f.parameters()) + list(f.buffers()):
            if t.is_floating_point():
                return t.dtype, t.device
    if x is not None and isinstance(x, torch.Tensor):
        return (x.dtype if x.is_floating_point() else torch.float64), x.device
    return torch.float64, torch.device("cpu")


def _as_inputs(x, rep_in: Rep, device=None) -> torch.Tensor:
    """Validate inputs (B, n) and return them in float64 on ``device``."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(np.asarray(x))
        except Exception as exc:
            raise DataError(f"inputs must be an array of shape (batch, {rep_in.size}): {exc}") from None
    if x.ndim == 1 and x.shape[0] == rep_in.size:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != rep_in.size:
        raise DataError(
            f"inputs have shape {tuple(x.shape)} but rep_in {rep_in!r} of {rep_in.group.name} has size {rep_in.size}; "
            f"pass a batch of shape (batch, {rep_in.size})"
        )
    if x.shape[0] == 0:
        raise DataError("inputs are empty (batch size 0); pass at least one input")
    if x.is_complex():
        raise DataError("complex inputs are not supported by the metrics; pass real inputs")
    x = x.to(dtype=torch.float64, device=device if device is not None else x.device)
    if not torch.all(torch.isfinite(x)):
        raise DataError("inputs contain NaN or inf; clean the data first")
    return x


def is_meta(t) -> bool:
    """True for a tensor on the meta device (shapes only, no values)."""
    return isinstance(t, torch.Tensor) and t.device.type == "meta"


def require_real_finite(x: torch.Tensor, who: str, why: str = "") -> None:
    """DataError unless the tensor x is real with finite entries (shared by the penalties and the wrappers).

    Tensors on the meta device (shapes only) pass the finiteness test: they have no values to check."""
    if x.is_complex() or (not is_meta(x) and not torch.all(torch.isfinite(x))):
        raise DataError(f"{who}: inputs must be real and finite (got complex, NaN or inf values){why}")


def _model_inputs(f: Callable, x, rep_in: Rep, dtype: Optional[torch.dtype]):
    """(model dtype (``dtype`` overrides the detected one), float64 inputs on the model's device)."""
    if is_meta(x):
        raise DataError("the inputs are on the meta device (shapes only, no values); an equivariance error needs "
                        "real numbers: pass inputs on a real device (e.g. torch.randn(batch, n))")
    mdtype, device = model_dtype_device(f, x if isinstance(x, torch.Tensor) else None)
    if device.type == "meta":
        raise ModelError("the model's parameters are on the meta device (shapes only, no values), so its outputs "
                         "cannot be measured; materialise it first, e.g. model.to_empty(device='cpu') followed by "
                         "load_state_dict(...) or a re-initialisation")
    return dtype or mdtype, _as_inputs(x, rep_in, device)


def _to_model(x64: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x64.to(dtype) if x64.dtype != dtype else x64


def _check_output(y, batch: int, n_out: int, rep_out: Rep, check_finite: bool = True) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        hint = ""
        if callable(y):  # e.g. def make_model(width): ... passed where a model or a zero-argument factory belongs
            hint = ("; it returned a callable, so it looks like a factory that takes arguments: a factory must be "
                    "callable without arguments (give its parameters defaults, or pass the model it returns)")
        raise ModelError(f"the model returned {type(y).__name__}, expected a tensor of shape (batch, {n_out}){hint}")
    if y.ndim == 0 or y.shape[0] != batch or math.prod(y.shape[1:]) != n_out:
        raise ModelError(
            f"the model returned shape {tuple(y.shape)} for a batch of {batch} inputs, but rep_out {rep_out!r} of "
            f"{rep_out.group.name} has size {n_out}; the output must be (batch, {n_out}) (or (batch, ...) with "
            f"{n_out} entries per input)"
        )
    if y.is_complex():
        raise ModelError("the model returned complex outputs; the metrics need real outputs")
    y = y.reshape(batch, n_out)
    if check_finite and is_meta(y):
        raise ModelError("the model returned a tensor on the meta device (shapes only, no values); its equivariance "
                         "error cannot be measured: run it on a real device")
    if check_finite and not torch.all(torch.isfinite(y)):
        bad = int((~torch.isfinite(y)).any(dim=1).sum())
        raise ModelError(f"the model returned NaN or inf for {bad} of {batch} inputs; check its forward pass "
                         "(divisions, logs, uninitialised parameters)")
    return y


def call_model(f: Callable, x: torch.Tensor, who: str = "", hint: str = ""):
    """f(x), with any failure of the user's code (not a SoftsymError) turned into a ModelError naming the input's
    shape and dtype; ``who`` prefixes the message, ``hint`` ends it."""
    try:
        return f(x)
    except SoftsymError:
        raise
    except Exception as exc:  # noqa: BLE001  (any failure of user code)
        raise ModelError(f"{who + ': ' if who else ''}calling the model on inputs of shape {tuple(x.shape)} "
                         f"({x.dtype}) failed with {type(exc).__name__}: {exc}{hint}") from exc


def _call(f: Callable, x: torch.Tensor, n_out: int, rep_out: Rep) -> torch.Tensor:
    """Call f on x (model dtype), validate the output and return it as float64 (B, n_out)."""
    y = call_model(f, x, hint=" (the metrics call it on stacks of transformed copies of the inputs: it must accept "
                              "a (batch, n_in) tensor of any batch size in its own dtype)")
    return _check_output(y, x.shape[0], n_out, rep_out).to(torch.float64)


#: Below this many rows per element, act_each uses one batched operator (per-row matrices) instead of a loop.
_BATCHED_ROWS: int = 256
#: ... and while the s * b stacked group elements take at most this many bytes
_BATCHED_BYTES: int = 64 << 20


def act_each(rep: Rep, elements: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """rho(g) x for every element g (S, d, d) and every row of x (B, n): returns (S*B, n), element-major.

    Small batches use one operator with a per-row batch of matrices; large ones loop over the elements with one
    structured operator each (avoids inverting a copy of g for every row).
    """
    s, b = elements.shape[0], x.shape[0]
    d = elements.shape[-1]
    # the per-row operator holds s*b matrices (d, d): only while that stays small (Z(300) at b = 200: 4.6 GB)
    if s > 1 and b < _BATCHED_ROWS and s * b * d * d * 8 <= _BATCHED_BYTES:
        return rep.rho(elements.repeat_interleave(b, dim=0)).apply(x.repeat(s, 1))
    return torch.cat([rep.rho(g).apply(x) for g in elements], dim=0)


@contextlib.contextmanager
def _eval_mode(f):
    """Temporarily put an nn.Module in eval mode (restored afterwards)."""
    if isinstance(f, nn.Module):
        was = f.training
        f.eval()
        try:
            yield
        finally:
            f.train(was)
    else:
        yield


@functools.lru_cache(maxsize=64)
def _closure(group: Group) -> FiniteGroup:
    """The finite group generated by the discrete generators of a compact group without Lie algebra (products such as
    S(3)*S(2), embeddings such as D(6)@z), enumerated once per distinct generator set."""
    return FiniteGroup(group.discrete_np, d=group.d, name=group.name)


def finite_elements(group: Group) -> Optional[np.ndarray]:
    """Distinct elements (order, d, d) of an enumerable finite group, or None.

    Finite groups are FiniteGroup instances and any compact group without Lie algebra (direct products and
    embeddings of finite groups). Deduplicated once more with -0.0 folded into 0.0 (as FiniteGroup's element keys
    do today; older enumerations keyed on raw rounded bytes and listed D(6) as 16 matrices for 12 elements).
    """
    if not isinstance(group, FiniteGroup):
        if len(group.lie_np) or group.is_complex or not group.is_compact:
            return None
        try:
            group = _closure(group)
        except GroupError:  # e.g. a rotation by 1 rad: compact but infinite; sample it instead
            return None
    if group.order is None:
        return None
    els = np.asarray(group.elements(), dtype=np.float64)
    keys = np.round(els.reshape(len(els), -1), 9) + 0.0  # vectorised (S(8): 40320 elements in ms, not 0.1 s)
    _, first = np.unique(keys, axis=0, return_index=True)
    return np.ascontiguousarray(els[np.sort(first)])


def check_seed(seed, *, allow_none: bool = True) -> Optional[int]:
    """The seed as an int (None passes when ``allow_none``); ConfigError for anything else (bools, floats, < 0)."""
    if seed is None and allow_none:
        return None
    if seed is None or isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer{' or None' if allow_none else ''}, got {seed!r}")
    return int(seed)


def check_spread(spread) -> float:
    """The spread of a non-compact sampler as a float; ConfigError unless it is a finite number >= 0."""
    if isinstance(spread, bool) or not isinstance(spread, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(spread)) or float(spread) < 0:
        raise ConfigError(f"spread must be a finite number >= 0 (the scale of the sampled non-compact part, default "
                          f"{defaults.SAMPLE_SPREAD}), got {spread!r}")
    return float(spread)


#: Largest block of sampled group elements the metrics draw at once (1 GiB of float64 matrices).
MAX_ELEMENT_BYTES = 1 << 30


def group_elements(group: GroupLike, n_samples: int = DEFAULT_N_SAMPLES, *, seed: Optional[int] = 0,
                   spread: Optional[float] = None, exhaustive: Optional[bool] = None
                   ) -> Tuple[torch.Tensor, bool, Optional[float], str]:
    """Elements to test: every element of a small finite group, else ``n_samples`` samples.

    Returns (elements (S, d, d) float64, exhaustive, spread (None for compact groups), description).
    ``exhaustive=None`` enumerates finite groups of order <= EXHAUSTIVE_MAX; True forces it (error if impossible),
    False always samples. Other groups use Group.sample (non-compact ones with ``spread``, default
    :data:`softsym.defaults.SAMPLE_SPREAD`); the description is :meth:`Group.describe_sampler`'s.
    """
    g = parse_group(group)
    if g.is_complex:
        raise ConfigError(f"{g.name} is a complex group; the metrics support real groups only")
    # validated even when a small finite group is enumerated (and n_samples unused): a typo stays a typo
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ConfigError(f"n_samples must be a positive integer, got {n_samples!r}")
    if int(n_samples) * g.d * g.d * 8 > MAX_ELEMENT_BYTES:
        raise ConfigError(f"n_samples={n_samples} elements of {g.name} would take "
                          f"{int(n_samples) * g.d * g.d * 8 / 2**30:.1f} GiB (float64 {g.d}x{g.d} matrices, drawn at "
                          f"once); use at most {MAX_ELEMENT_BYTES // (8 * g.d * g.d):,} (a few hundred already estimate "
                          "the mean error to a few percent)")
    seed = check_seed(seed)
    els_all = finite_elements(g)
    order = None if els_all is None else len(els_all)
    if exhaustive is None:
        exhaustive = order is not None and order <= EXHAUSTIVE_MAX
    if exhaustive:
        if order is None:
            raise ConfigError(f"{g.name} cannot be enumerated exhaustively (not a finite group with at most "
                              f"{EXHAUSTIVE_MAX} elements); sample it with n_samples")
        els = torch.from_numpy(np.ascontiguousarray(els_all))
        return els, True, None, f"exhaustive ({order} elements)"
    sp = None if g.is_compact else (defaults.SAMPLE_SPREAD if spread is None else check_spread(spread))
    # what Group.sample actually does: Haar, polar decomposition, or the generic exp / random-word sampler
    desc = f"uniform over {order} elements" if els_all is not None else g.describe_sampler(sp)
    if els_all is not None:  # uniform over the distinct elements
        idx = np.random.default_rng(seed).integers(0, order, size=int(n_samples))
        return torch.from_numpy(np.ascontiguousarray(els_all[idx])), False, sp, desc
    els = g.sample(int(n_samples), seed=seed, spread=sp)
    return els.to(torch.float64), False, sp, desc


# ====================================================================== sampled equivariance error
class EquivarianceMeter:
    """Accumulates the sampled equivariance error of a model over batches.

    The elements are drawn once at construction (seeded), so successive ``update`` calls are comparable.

    Parameters
    ----------
    group, rep_in, rep_out : Group / Rep objects or spec strings.
    n_samples : number of sampled elements (ignored for finite groups checked exhaustively).
    seed : seed of the element sampler.
    spread : spread of non-compact samplers (default softsym.defaults.SAMPLE_SPREAD).
    exhaustive : see :func:`group_elements`.
    chunk_rows : maximal number of rows per model call (elements x batch are stacked up to this many rows).
    """

    def __init__(self, group: GroupLike, rep_in: RepLike, rep_out: RepLike, n_samples: int = DEFAULT_N_SAMPLES,
                 *, seed: Optional[int] = 0, spread: Optional[float] = None, exhaustive: Optional[bool] = None,
                 chunk_rows: int = 8192) -> None:
        self.group, self.rep_in, self.rep_out = _resolve(group, rep_in, rep_out)
        self.elements, self.exhaustive, self.spread, self.sampler = group_elements(
            self.group, n_samples, seed=seed, spread=spread, exhaustive=exhaustive)
        self.chunk_rows = max(1, int(chunk_rows))
        eye = torch.eye(self.group.d, dtype=torch.float64)
        self._g_dist = (self.elements - eye).abs().mean(dim=(1, 2))  # mean |g - I|, (S,)
        self.reset()

    def reset(self) -> None:
        s = len(self.elements)
        self._diff2 = torch.zeros(s, dtype=torch.float64)
        self._a2 = torch.zeros(s, dtype=torch.float64)
        self._b2 = torch.zeros(s, dtype=torch.float64)
        self._fx2 = 0.0
        self._x2 = 0.0
        self._x_entries = 0
        self._ref_out: Optional[float] = None  # squares are accumulated in units of these (first batch's max |.|),
        self._ref_in: Optional[float] = None  # so outputs of 1e160 or 1e-170 neither overflow nor underflow
        self._entries = 0
        self._inputs = 0
        self._dtype = torch.float64

    @torch.no_grad()
    def update(self, f: Callable, x, *, dtype: Optional[torch.dtype] = None) -> None:
        """Add the batch x (B, rep_in.size) evaluated by f. ``dtype``: the model's input dtype (auto-detected)."""
        mdtype, x64 = _model_inputs(f, x, self.rep_in, dtype)
        self._dtype = mdtype
        b, n_out = x64.shape[0], self.rep_out.size
        with _eval_mode(f):
            fx = _call(f, _to_model(x64, mdtype), n_out, self.rep_out)  # (B, m) float64
            if self._ref_out is None:
                self._ref_out, self._ref_in = _reference_scale(fx), _reference_scale(x64)
            ref = self._ref_out
            els = self.elements.to(x64.device)
            per = max(1, self.chunk_rows // b)
            for start in range(0, len(els), per):
                g = els[start:start + per]  # (s, d, d)
                s = g.shape[0]
                xg = act_each(self.rep_in, g, x64)  # (s*B, n)
                a = _call(f, _to_model(xg, mdtype), n_out, self.rep_out)  # f(rho_in(g) x)
                bb = act_each(self.rep_out, g, fx)  # rho_out(g) f(x)
                a, bb = a.reshape(s, b, n_out) / ref, bb.reshape(s, b, n_out) / ref
                self._diff2[start:start + s] += (a - bb).pow(2).sum(dim=(1, 2)).cpu()
                self._a2[start:start + s] += a.pow(2).sum(dim=(1, 2)).cpu()
                self._b2[start:start + s] += bb.pow(2).sum(dim=(1, 2)).cpu()
        self._fx2 += float((fx / ref).pow(2).sum())
        self._x2 += float((x64 / self._ref_in).pow(2).sum())
        self._x_entries += x64.numel()
        self._entries += b * n_out
        self._inputs += b

    def compute(self) -> EquivarianceResult:
        """The result over everything added since construction / reset."""
        if self._entries == 0:
            raise ConfigError("EquivarianceMeter.compute() called before update(); add at least one batch")
        n, ref = float(self._entries), self._ref_out
        out_rms = min(1.0, ref * math.sqrt(self._fx2 / n))  # EMLP's floor capped at the output scale (docstring)

        def errors(floor_scale: float) -> List[float]:
            return [_safe_ratio(ref * float(d.sqrt()),
                                (ref * float((a / n).sqrt() + (bb / n).sqrt()) + float(gd) * floor_scale) * math.sqrt(n))
                    for d, a, bb, gd in zip(self._diff2, self._a2, self._b2, self._g_dist)]

        scale, free = errors(1.0), errors(out_rms)
        plain = [_safe_ratio(float(d.sqrt()), math.sqrt(self._fx2)) for d in self._diff2]
        return EquivarianceResult(
            mean=float(np.mean(scale)), max=float(np.max(scale)),
            plain_mean=float(np.mean(plain)), plain_max=float(np.max(plain)),
            n_samples=len(scale), spread=self.spread, group=self.group.name, exhaustive=self.exhaustive,
            sampler=self.sampler, n_inputs=self._inputs, dtype=str(self._dtype), per_sample=scale,
            capped_mean=float(np.mean(free)), capped_max=float(np.max(free)),
            output_rms=ref * math.sqrt(self._fx2 / n),
            input_rms=self._ref_in * math.sqrt(self._x2 / max(1, self._x_entries)),
        )


def equivariance_error(f: Callable, group: GroupLike, rep_in: RepLike, rep_out: RepLike,
                       x: Union[torch.Tensor, np.ndarray],
                       n_samples: int = DEFAULT_N_SAMPLES, *, seed: Optional[int] = 0,
                       spread: Optional[float] = None, exhaustive: Optional[bool] = None,
                       dtype: Optional[torch.dtype] = None) -> EquivarianceResult:
    """Sampled equivariance error of ``f`` on inputs ``x``.

    Parameters
    ----------
    f : callable (B, n_in) -> (B, n_out), e.g. an nn.Module (put in eval mode during the measurement).
    group : Group or spec ("O(3)"); rep_in / rep_out : Rep or spec ("5V0+5V", "V**2").
    x : inputs (B, n_in); any float dtype, transformed in float64 and cast to the model's dtype.
    n_samples : sampled elements (finite groups of order <= EXHAUSTIVE_MAX use every element instead).
    seed : seed of the sampler; spread : non-compact sampler spread (default SAMPLE_SPREAD).

    Returns
    -------
    EquivarianceResult with ``mean`` / ``max`` of EMLP's scale-adjusted error
    rms(a - b) / (rms(a) + rms(b) + mean|g - I|) over the elements (a = f(rho_in(g) x), b = rho_out(g) f(x)),
    ``capped_mean`` / ``capped_max`` with the floor capped at min(1, rms f(x)) (module docstring)
    and ``plain_mean`` / ``plain_max`` of ||a - b|| / ||f(x)||.

    >>> import torch, softsym
    >>> from softsym.metrics import equivariance_error
    >>> x = torch.randn(8, 3, dtype=torch.float64)
    >>> equivariance_error(lambda v: v * v.norm(dim=1, keepdim=True), "O(3)", "V", "V", x).max < 1e-12
    True
    """
    meter = EquivarianceMeter(group, rep_in, rep_out, n_samples, seed=seed, spread=spread, exhaustive=exhaustive)
    meter.update(f, x, dtype=dtype)
    return meter.compute()


# ====================================================================== Lie derivative
def _generators(group: Group) -> torch.Tensor:
    return group.lie_algebra.to(torch.float64)


def _jvp(f: Callable, x: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    from torch.func import jvp

    try:
        return jvp(f, (x,), (t,))
    except SoftsymError:
        raise
    except Exception as exc:
        raise ModelError(
            f"forward-mode differentiation (torch.func.jvp) of the model failed with {type(exc).__name__}: {exc}. "
            "Use method='vjp' (double backward) or 'fd' (finite differences) for models with operations lacking "
            "forward-mode AD"
        ) from exc


_AD_FAILURE = "_ad_failure"


def _double_vjp(f: Callable, x: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(f(x), J_f(x) t) by reverse mode twice: J t = d/du <J^T u, t> (for models without forward-mode AD)."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        try:
            y = f(xr)
        except SoftsymError:
            raise
        except Exception as exc:
            raise ModelError(f"calling the model on inputs of shape {tuple(x.shape)} failed with "
                             f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(y, torch.Tensor) or not y.requires_grad:
            return y, (torch.zeros_like(y) if isinstance(y, torch.Tensor) else y)
        u = torch.zeros_like(y, requires_grad=True)
        try:
            (gx,) = torch.autograd.grad(y, xr, grad_outputs=u, create_graph=True, allow_unused=True)
            if gx is None or not gx.requires_grad:
                return y.detach(), torch.zeros_like(y)
            (dy,) = torch.autograd.grad(gx, u, grad_outputs=t, allow_unused=True)
        except SoftsymError:
            raise
        except Exception as exc:
            raise ModelError(f"double-backward differentiation of the model failed with {type(exc).__name__}: "
                             f"{exc}. Use method='fd' (finite differences)") from exc
        return y.detach(), (torch.zeros_like(y) if dy is None else dy)


def _lie_rows(f: Callable, rep_in: Rep, rep_out: Rep, gens: torch.Tensor, x64: torch.Tensor, mdtype: torch.dtype,
              method: str = "jvp", fd_step: float = 1e-3) -> Tuple[torch.Tensor, torch.Tensor]:
    """L_A f(x) for every generator: returns (lie (k, B, m) float64, f(x) (B, m) float64)."""
    k, b, n_out = gens.shape[0], x64.shape[0], rep_out.size
    gb = gens.to(x64.device).repeat_interleave(b, dim=0)  # (k*B, d, d)
    xs = x64.repeat(k, 1)
    tangent = rep_in.drho(gb).apply(xs)  # drho_in(A) x
    if method in ("jvp", "vjp"):
        def fn(inp):
            return f(inp)
        runner = _jvp if method == "jvp" else _double_vjp
        y, dy = runner(fn, _to_model(xs, mdtype), _to_model(tangent, mdtype))
        try:
            fx = _check_output(y, k * b, n_out, rep_out).to(torch.float64)
            dy = _check_output(dy, k * b, n_out, rep_out, check_finite=False).to(torch.float64)
        except ModelError as exc:  # the batch the model saw is the inputs stacked once per generator
            raise ModelError(f"{exc} (the Lie derivative calls the model on the {b} inputs stacked {k} times, once "
                             "per generator)") from None
    elif method == "fd":
        # fourth-order central differences along the orbit exp(sA) x, s in {-2h, -h, h, 2h}: truncation ~h^4,
        # round-off ~eps/h, so ~1e-12 relative in float64 with h = 1e-3
        h = float(fd_step)
        ys = {}
        with torch.no_grad():
            for k_ in (-2, -1, 1, 2):
                e = torch.linalg.matrix_exp((k_ * h) * gb)
                ys[k_] = _call(f, _to_model(rep_in.rho(e).apply(xs), mdtype), n_out, rep_out)
            fx = _call(f, _to_model(xs, mdtype), n_out, rep_out)
        dy = (ys[-2] - 8 * ys[-1] + 8 * ys[1] - ys[2]) / (12 * h)
    else:
        raise ConfigError(f"unknown Lie-derivative method {method!r}; use 'auto', 'jvp', 'vjp' or 'fd'")
    lie = dy - rep_out.drho(gb).apply(fx)
    return lie.reshape(k, b, n_out), fx[:b]


def _lie_rows_auto(f, rep_in, rep_out, gens, x64, mdtype, method: str):
    """_lie_rows with method 'auto'. Returns (lie, fx, method used).

    'auto': forward mode (jvp) when the model supports it, cross-checked against fourth-order finite differences
    on the first few inputs: a model that detaches part of its graph (``x.detach()``, ``.data``, a numpy round
    trip that forward-mode AD does not see) gets a silently wrong tangent -- an exactly equivariant ``2 *
    x.detach()`` scored ~1, "not equivariant". When the jvp disagrees with the differences by more than half of
    their own size the differences are used for every input (fd along the orbit exp(sA) x is exact for any
    equivariant model, even a non-smooth one; a kink of a non-equivariant ReLU model only perturbs the
    differences slightly, which keeps the jvp; half-precision models are not cross-checked: their differences
    would be round-off, and differences that change with the step are treated as round-off too: a float32 model
    computing in bf16 inside keeps the jvp). When jvp is unsupported: reverse mode twice (vjp), accepted only
    when it agrees with the finite differences (a hand-written backward that is not itself differentiable makes
    double backward silently wrong), else the finite differences.
    """
    if method != "auto":
        lie, fx = _lie_rows(f, rep_in, rep_out, gens, x64, mdtype, method)
        return lie, fx, method
    tol = 1e-6 if mdtype == torch.float64 else 1e-2
    try:
        lie, fx = _lie_rows(f, rep_in, rep_out, gens, x64, mdtype, "jvp")
    except ModelError as exc:
        if "differentiation" not in str(exc):
            raise
        log.info("Lie derivative: torch.func.jvp failed (%s); trying double backward and finite differences", exc)
    else:
        if mdtype not in (torch.float32, torch.float64):  # half precisions: finite differences are round-off
            return lie, fx, "jvp"
        m = min(x64.shape[0], _AUTO_CHECK_ROWS)
        lie_c, fx_c = _lie_rows(f, rep_in, rep_out, gens, x64[:m], mdtype, "fd")
        with torch.no_grad():
            disc = float((lie[:, :m].detach() - lie_c.detach()).norm())
            scale_c = float(fx_c.detach().norm()) * max(1.0, float(gens.abs().max())) + 1e-300
            fd_size = float(lie_c.detach().norm())
        if disc <= tol * scale_c or disc <= 0.5 * fd_size:
            return lie, fx, "jvp"
        # differences that change with the step are round-off, not a derivative (a float32 model computing in
        # bf16 / fp16 inside, e.g. under autocast): they cannot overrule the jvp
        lie_c2, _ = _lie_rows(f, rep_in, rep_out, gens, x64[:m], mdtype, "fd", fd_step=4e-3)
        with torch.no_grad():
            fd_noise = float((lie_c2.detach() - lie_c.detach()).norm())
        if fd_noise >= 0.25 * disc:
            log.info("Lie derivative: finite differences depend on the step (%.2g against %.2g between the jvp and "
                     "them): the model computes in reduced precision; keeping torch.func.jvp", fd_noise, disc)
            return lie, fx, "jvp"
        log.warning("Lie derivative: torch.func.jvp disagrees with finite differences (relative difference %.2g; "
                    "does the model detach part of its computation?); using finite differences", disc / scale_c)
        lie_fd, fx = _lie_rows(f, rep_in, rep_out, gens, x64, mdtype, "fd")
        return lie_fd, fx, "fd"
    lie_fd, fx = _lie_rows(f, rep_in, rep_out, gens, x64, mdtype, "fd")
    try:
        lie_v, _ = _lie_rows(f, rep_in, rep_out, gens, x64, mdtype, "vjp")
    except ModelError:
        return lie_fd, fx, "fd"
    scale = fx.norm() * max(1.0, float(gens.abs().max())) + 1e-300
    if float((lie_v - lie_fd).norm()) <= tol * float(scale):
        return lie_v, fx, "vjp"
    return lie_fd, fx, "fd"


#: Inputs on which method='auto' cross-checks the forward-mode Lie derivative against finite differences.
_AUTO_CHECK_ROWS: int = 4


def lie_derivative(f: Callable, rep_in: RepLike, rep_out: RepLike, A: Union[torch.Tensor, np.ndarray],
                   x: Union[torch.Tensor, np.ndarray], _x: Optional[Union[torch.Tensor, np.ndarray]] = None, *,
                   group: Optional[GroupLike] = None, method: str = "auto",
                   dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The Lie derivative L_A f(x) = J_f(x) drho_in(A) x - drho_out(A) f(x), shape (B, n_out), float64.

    Also callable as ``lie_derivative(f, group, rep_in, rep_out, A, x)``, the argument order of the other metrics.

    Parameters
    ----------
    rep_in, rep_out : bound Reps (or spec strings together with ``group``).
    A : Lie-algebra element (d, d).
    x : inputs (B, n_in).
    method : "jvp" (torch.func.jvp), "vjp" (reverse mode twice, for custom autograd Functions without
        forward-mode support; can be silently wrong when a hand-written backward is not differentiable), "fd"
        (fourth-order central differences, step 1e-3, ~1e-12 relative in float64) or "auto" (jvp; else vjp if it
        agrees with fd; else fd).
    """
    if _x is not None:  # (f, group, rep_in, rep_out, A, x)
        if group is not None:
            raise ConfigError("lie_derivative got the group both positionally (second) and as group=")
        group, rep_in, rep_out, A, x = rep_in, rep_out, A, x, _x
    if group is not None:
        g, rin, rout = _resolve(group, rep_in, rep_out)
    else:
        if not (isinstance(rep_in, Rep) and isinstance(rep_out, Rep)):
            raise ConfigError("lie_derivative needs bound Reps, or spec strings together with group=")
        rin, rout = rep_in, rep_out
        g = rin._require_group()
    if g.is_complex:
        raise ConfigError(f"{g.name} is a complex group; the metrics support real groups only")
    a = A if isinstance(A, torch.Tensor) else torch.as_tensor(np.asarray(A))
    if a.is_complex():
        raise ConfigError("A must be a real Lie-algebra element; complex groups are not supported by the metrics")
    if a.shape != (g.d, g.d):
        raise ConfigError(f"A must be a ({g.d}, {g.d}) Lie-algebra element of {g.name}, got shape {tuple(a.shape)}")
    mdtype, x64 = _model_inputs(f, x, rin, dtype)
    with _eval_mode(f):
        lie, _, _ = _lie_rows_auto(f, rin, rout, a.to(torch.float64)[None], x64, mdtype, method)
    return lie[0]


class LieDerivativeMeter:
    """Accumulates per-generator Lie-derivative norms over batches (see :func:`lie_derivative_error`)."""

    def __init__(self, group: GroupLike, rep_in: RepLike, rep_out: RepLike, *, method: str = "auto",
                 chunk_rows: int = 8192) -> None:
        self.group, self.rep_in, self.rep_out = _resolve(group, rep_in, rep_out)
        if self.group.is_complex:
            raise ConfigError(f"{self.group.name} is a complex group; the metrics support real groups only")
        if method not in ("auto", "jvp", "vjp", "fd"):
            raise ConfigError(f"unknown Lie-derivative method {method!r}; use 'auto', 'jvp', 'vjp' or 'fd'")
        self.method = method
        self.method_used: Optional[str] = None
        self.generators = _generators(self.group)
        self.chunk_rows = max(1, int(chunk_rows))
        self._norms = torch.linalg.matrix_norm(self.generators, ord=2) if len(self.generators) else torch.zeros(0)
        self.reset()

    def reset(self) -> None:
        self._lie2 = torch.zeros(len(self.generators), dtype=torch.float64)
        self._fx2 = 0.0
        self._inputs = 0
        self._dtype = torch.float64
        self.method_used = None  # resolved again after a reset: a method that suits one model need not suit another
        self._model_id: Optional[int] = None

    def update(self, f: Callable, x, *, dtype: Optional[torch.dtype] = None) -> None:
        mdtype, x64 = _model_inputs(f, x, self.rep_in, dtype)
        if id(f) != self._model_id:
            self.method_used = None  # another model: "auto" decides afresh (the accumulated norms are kept)
        self._model_id = id(f)
        self._dtype = mdtype
        b, n_out = x64.shape[0], self.rep_out.size
        with _eval_mode(f):
            if len(self.generators) == 0:
                with torch.no_grad():
                    fx = _call(f, _to_model(x64, mdtype), n_out, self.rep_out)
            per = max(1, self.chunk_rows // b)
            for start in range(0, len(self.generators), per):
                gens = self.generators[start:start + per]
                lie, fx, used = _lie_rows_auto(f, self.rep_in, self.rep_out, gens, x64, mdtype,
                                               self.method_used or self.method)
                self.method_used = used
                self._lie2[start:start + len(gens)] += lie.detach().pow(2).sum(dim=(1, 2)).cpu()
        self._fx2 += float(fx.detach().pow(2).sum())
        self._inputs += b

    def compute(self) -> LieDerivativeResult:
        if self._inputs == 0:
            raise ConfigError("LieDerivativeMeter.compute() called before update(); add at least one batch")
        fnorm = math.sqrt(self._fx2)
        rows = []
        for i, (l2, an) in enumerate(zip(self._lie2, self._norms)):
            plain = _safe_ratio(float(l2.sqrt()), fnorm)
            rows.append({"index": i, "error": _safe_ratio(plain, float(an)) if plain else 0.0, "plain": plain,
                         "norm": float(an)})
        errs = [r["error"] for r in rows] or [0.0]
        plains = [r["plain"] for r in rows] or [0.0]
        return LieDerivativeResult(
            mean=float(np.mean(errs)), max=float(np.max(errs)), plain_mean=float(np.mean(plains)),
            plain_max=float(np.max(plains)), per_generator=rows, n_generators=len(rows), group=self.group.name,
            n_samples=len(rows), spread=None, method=self.method_used or "none", n_inputs=self._inputs,
            dtype=str(self._dtype),
        )


def lie_derivative_error(f: Callable, group: GroupLike, rep_in: RepLike, rep_out: RepLike,
                         x: Union[torch.Tensor, np.ndarray],
                         n_samples: Optional[int] = None, *, method: str = "auto",
                         dtype: Optional[torch.dtype] = None) -> LieDerivativeResult:
    """Lie-derivative error of f for every Lie-algebra generator A of ``group`` (Gruver et al., ICLR 2023).

    For each generator: ``error = ||L_A f|| / (||f(x)|| ||A||_2)`` and ``plain = ||L_A f|| / ||f(x)||`` with
    L_A f(x) = d/dt f(exp(tA) x)|_{t=0} - drho_out(A) f(x), norms over the whole batch. The derivative is taken
    with ``torch.func.jvp`` (tangent drho_in(A) x). For models whose custom autograd Functions lack a forward-mode
    rule, ``method="auto"`` uses reverse mode twice ("vjp") when it agrees with fourth-order central differences
    and the differences ("fd", ~1e-12 relative in float64) otherwise; the result's ``method`` says which.
    Only the identity component is tested; discrete symmetries are covered by :func:`equivariance_error`.
    ``n_samples`` is accepted so that calls mirror :func:`equivariance_error`, and is unused: every generator is
    tested, nothing is sampled.

    >>> import torch
    >>> from softsym.metrics import lie_derivative_error
    >>> x = torch.randn(8, 3, dtype=torch.float64)
    >>> lie_derivative_error(lambda v: v * v.norm(dim=1, keepdim=True), "SO(3)", "V", "V", x).max < 1e-12
    True
    """
    if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer))
                                  or n_samples < 1):
        raise ConfigError(f"n_samples must be a positive integer (unused by the Lie derivative), got {n_samples!r}")
    meter = LieDerivativeMeter(group, rep_in, rep_out, method=method)
    meter.update(f, x, dtype=dtype)
    return meter.compute()


# ====================================================================== linear maps
def _require_finite(t: torch.Tensor, what: str) -> None:
    """DataError when a weight contains NaN or inf (its energy fraction would be meaningless)."""
    if not torch.all(torch.isfinite(t)):
        raise DataError(f"{what} contains NaN or inf; the subspace energy of a non-finite map is undefined")


def _as_map(W, what: str) -> torch.Tensor:
    """A weight as a flat float64 (complex128 if complex) tensor; DataError for non-numeric or non-finite values."""
    try:
        t = torch.as_tensor(W if isinstance(W, torch.Tensor) else np.asarray(W)).detach()
    except Exception as exc:
        raise DataError(f"{what} must be a numeric array or tensor: {exc}") from None
    t = t.to(torch.complex128 if t.is_complex() else torch.float64).reshape(-1)
    _require_finite(t, what)
    return t


def _energy_in(basis: Basis, v: torch.Tensor) -> float:
    """||Q^H v||^2; a complex v with a real basis splits into its real and imaginary parts (P is real)."""
    if v.is_complex() and not basis.is_complex:
        return _energy_in(basis, v.real) + _energy_in(basis, v.imag)
    return float(basis.coefficients(v).abs().pow(2).sum())


def _check_orientation(W, basis: Basis) -> None:
    """ConfigError for a 2-d W given as (in, out): its flattening would silently be the wrong map."""
    shape = tuple(getattr(W, "shape", ()))
    factors = getattr(basis.rep, "factors", None)
    if len(shape) != 2 or shape[0] == shape[1] or not factors or len(factors) < 2:
        return
    sizes = [f.size for f in factors]
    splits = {(math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, len(sizes))}
    if shape not in splits and shape[::-1] in splits:
        raise ConfigError(f"W has shape {shape}, the transpose of the (out, in) = {shape[::-1]} layout of "
                          f"{basis.rep!r}; pass the weight as nn.Linear.weight is laid out (out, in), e.g. W.T")


def subspace_energy(W: Union[torch.Tensor, np.ndarray, nn.Linear], basis: Basis,
                    bias: Optional[Union[torch.Tensor, np.ndarray]] = None,
                    bias_basis: Optional[Basis] = None) -> float:
    """Fraction ||P W||^2 / ||W||^2 of a linear map's energy in the equivariant subspace (1 = equivariant).

    Parameters
    ----------
    W : weight (out, in) as in nn.Linear.weight (or flattened (out*in,)), or an nn.Linear.
    basis : equivariant basis of Hom(rep_in, rep_out) (``softsym.equivariant_basis(softsym.Hom(rin, rout))``).
    bias, bias_basis : optional bias (out,) and the invariant basis of rep_out; included in both norms.

    Computed from the factored basis as ||Q^T vec W||^2 / ||W||^2 (never a dense projector), in float64.
    """
    for b_, what in ((basis, "basis"), (bias_basis, "bias_basis")):
        if b_ is not None and not isinstance(b_, Basis):
            raise ConfigError(f"subspace_energy: {what} must be a softsym Basis (e.g. "
                              f"softsym.equivariant_basis(softsym.Hom(rep_in, rep_out))), got {type(b_).__name__}")
    if isinstance(W, nn.Linear):
        if bias is None and W.bias is not None and bias_basis is not None:
            bias = W.bias
        W = W.weight
    _check_orientation(W, basis)
    w = _as_map(W, "W")
    if w.shape[0] != basis.size:
        raise ConfigError(f"W has {w.shape[0]} entries but the basis is of a rep of size {basis.size} ({basis.rep!r})")
    num = _energy_in(basis, w)
    den = float(w.abs().pow(2).sum())
    if bias is not None:
        if bias_basis is None:
            raise ConfigError("subspace_energy: give bias_basis (the invariant basis of rep_out) with bias")
        bv = _as_map(bias, "bias")
        num += _energy_in(bias_basis, bv)
        den += float(bv.abs().pow(2).sum())
    if den == 0.0:
        return 1.0
    return min(1.0, num / den)
