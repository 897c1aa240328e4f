"""Models: EMLP (exact), MLP (baseline), RPP (residual pathway prior) and SoftEMLP (PER, soft / mixed symmetry).

Every model has ``forward(x)``, ``regularization() -> Tensor`` (a scalar the trainer adds to the loss; zero for
MLP and EMLP) and ``n_parameters``.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError, RepError, SoftsymError
from ..groups.base import Group
from ..groups.parse import parse_group
from ..reps.base import Rep
from ..soft.candidates import covering_candidate, lie_algebra_contains
from ..soft.symmetry import DEFAULT_STRENGTHS, SoftSymmetry
from ._util import (as_group, as_seed, as_unbound_rep, bind_rep, check_real_group, check_same_d, factory_kwargs,
                    zero_scalar)
from .bilinear import BiLinear
from .gates import GatedNonlinearity
from .linear import EquivariantLinear, RPPLinear
from .projection import ProjectionPlan
from .reps import architecture_mismatch, gated, uniform_rep

__all__ = ["EMLPBlock", "EMLP", "MLP", "RPP", "SoftEMLP"]


def _check_layers(num_layers) -> int:
    if not isinstance(num_layers, (int, np.integer)) or isinstance(num_layers, bool) or num_layers < 0:
        raise ConfigError(f"num_layers must be a non-negative integer, got {num_layers!r}")
    return int(num_layers)


def _warn_first_candidate(groups: Sequence[Group], names: Sequence[str]) -> None:
    """Warn that full_group fell back to the first candidate although its Lie algebra misses some candidate's."""
    outside = [n for n, h in zip(names, groups) if not lie_algebra_contains(groups[0], h)]
    warnings.warn(f"SoftEMLP: no candidate's Lie algebra contains every other candidate's, so full_group defaults to "
                  f"the first candidate {names[0]}, whose Lie algebra does not contain that of {', '.join(outside)}; "
                  "pass full_group= (the group the architecture is built for, e.g. one containing every candidate)",
                  UserWarning, stacklevel=3)


def _pick_candidates(groups, candidates):
    """``groups`` or its keyword alias ``candidates`` (exactly one of them)."""
    if groups is not None and candidates is not None:
        raise ConfigError("SoftEMLP got both groups= and candidates= (the same argument under two names); give "
                          "the candidate groups once")
    if groups is None and candidates is None:
        raise ConfigError("SoftEMLP's candidate groups must be given: pass them third or as candidates=[...], e.g. "
                          "candidates=['O(3)', 'O(2)@z']")
    return groups if groups is not None else candidates


def _check_layer_sizes(sizes: Sequence[int], model: str, dtype) -> None:
    """ConfigError before building when a dense layer of consecutive ``sizes`` would exceed the memory cap
    (``softsym.defaults.max_dense_bytes()``, ``SOFTSYM_MAX_DENSE_BYTES``): a huge ``ch`` would otherwise spend
    minutes building and end in the allocator's raw error."""
    from .. import defaults

    cap = defaults.max_dense_bytes()
    item = torch.empty((), dtype=dtype if dtype is not None else torch.get_default_dtype()).element_size()
    for a, b in zip(sizes, sizes[1:]):
        if a * b * item > cap:
            raise ConfigError(f"{model}: a {b:,} x {a:,} weight matrix needs {a * b * item / 1e9:.3g} GB, above the "
                              f"cap of {cap / 1e9:.3g} GB; use a smaller ch (or raise SOFTSYM_MAX_DENSE_BYTES)")


def _hidden_reps(ch, num_layers: int, group, seed: int, *, unbound_d=None, dual_differs=None) -> List[Rep]:
    """Hidden reps as EMLP parses ``ch``: an int (uniform_rep), a Rep/string, or a list of those (one per layer).

    With ``unbound_d`` the reps are returned unbound (for re-binding to several candidate groups).
    """
    def one(c):
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if unbound_d is not None:
                return uniform_rep(int(c), None, seed=seed, d=unbound_d, dual_differs=dual_differs)
            return uniform_rep(int(c), group, seed=seed)
        if isinstance(c, (str, Rep)):
            return as_unbound_rep(c, "ch") if unbound_d is not None else bind_rep(c, group, "ch")
        raise ConfigError(f"ch must be an int, a Rep / rep string, or a list of those; got {type(c).__name__}")

    if isinstance(ch, (list, tuple)):
        if not ch:
            raise ConfigError("ch is an empty list; give one entry per hidden layer")
        return [one(c) for c in ch]
    return [one(ch)] * num_layers


def _linear_t(layer: nn.Module, xT: torch.Tensor) -> torch.Tensor:
    """Feature-major linear map (in, N) -> (out, N) for nn.Linear and softsym's linear layers."""
    if isinstance(layer, nn.Linear):
        if layer.bias is None:
            return torch.mm(layer.weight, xT)
        return torch.addmm(layer.bias.unsqueeze(1), layer.weight, xT)
    return layer.forward_t(xT)


def _run_t(network: nn.Sequential, x: torch.Tensor, in_features: int, out_features: int) -> torch.Tensor:
    """Run EMLP blocks on the feature-major (features, N) layout; the last (linear) layer returns (..., out)."""
    lead = x.shape[:-1]
    h = x.reshape(-1, in_features).t()
    layers = network._modules
    last = len(layers) - 1
    for i, layer in enumerate(layers.values()):
        if i < last:
            h = layer.forward_t(h)
        else:
            w, b = layer._weights() if isinstance(layer, EquivariantLinear) else (layer.weight, layer.bias)
            h = F.linear(h.t(), w, b)
    return h.reshape(*lead, out_features)


class _ModelMixin:
    @property
    def n_parameters(self) -> int:
        """Number of trainable scalars."""
        return int(sum(p.numel() for p in self.parameters() if p.requires_grad))

    def _check_input(self, x: torch.Tensor) -> None:
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise DataError(f"{name} expects a torch.Tensor of shape (..., {self.in_features}), got "
                            f"{type(x).__name__} (convert with torch.as_tensor(x, dtype=torch.float32))")
        p = next(self.parameters(), None)
        if p is not None and x.dtype != p.dtype and not torch.is_autocast_enabled(x.device.type):
            kind = {torch.float64: "model.double()", torch.float32: "model.float()"}.get(x.dtype)
            fix = f"x.to({p.dtype})" + (f" or convert the model with {kind}" if kind else "")
            raise DataError(f"{name} has {p.dtype} parameters but got a {x.dtype} input of shape {tuple(x.shape)}; "
                            f"cast the input with {fix}")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise RepError(
                f"{type(self).__name__} expects inputs with last dimension {self.in_features} (rep_in "
                f"{self.rep_in!r}), got shape {tuple(x.shape)}"
            )


class EMLPBlock(nn.Module):
    """Linear rep_in -> gated(rep_out), bilinear residual on gated(rep_out), gated nonlinearity -> rep_out.

    ``linear`` overrides the linear layer (RPP and SoftEMLP pass their own); ``swish_path`` adds the
    residual-pathway swish term of RPP / PER to the nonlinearity; ``bilinear=False`` drops the bilinear layer.
    """

    def __init__(self, rep_in: Union[str, Rep], rep_out: Union[str, Rep], group: Optional[Union[str, Group]] = None, *,
                 seed: int = 0, linear: Optional[nn.Module] = None, swish_path: bool = False, bilinear: bool = True,
                 dtype: Optional[torch.dtype] = None, device: Optional[Union[str, torch.device]] = None):
        super().__init__()
        fk = factory_kwargs(dtype, device)
        rep_out = bind_rep(rep_out, group, "rep_out")
        g_out = gated(rep_out)
        self.linear = linear if linear is not None else EquivariantLinear(rep_in, g_out, group=group, **fk)
        self.bilinear = BiLinear(g_out, g_out, seed=seed, **fk) if bilinear else None
        self.nonlinearity = GatedNonlinearity(rep_out, swish_path=swish_path, **fk)
        self.rep_out, self.out_features = rep_out, rep_out.size
        self.in_features = getattr(self.linear, "in_features", None)

    def forward_t(self, xT: torch.Tensor) -> torch.Tensor:
        """(in, N) -> (out, N) on feature-major tensors."""
        lin = _linear_t(self.linear, xT)
        if self.bilinear is not None:
            lin = self.bilinear.forward_t(lin, add_input=True)
        return self.nonlinearity.forward_t(lin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out): linear, bilinear residual, gated nonlinearity."""
        if self.in_features is not None and (x.dim() == 0 or x.shape[-1] != self.in_features):
            raise RepError(f"EMLPBlock expects last dimension {self.in_features}, got shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        out = self.forward_t(x.reshape(-1, x.shape[-1]).t())
        return out.t().reshape(*lead, out.shape[0])


class EMLP(_ModelMixin, nn.Module):
    """Equivariant MLP (Finzi, Welling & Wilson, ICML 2021): ``num_layers`` EMLPBlocks with hidden reps
    ``uniform_rep(ch, group)`` (or the given Rep(s)) and a final equivariant linear layer.

    ``seed`` fixes the randomness of the architecture (binomial split of uniform_rep, bilinear copies);
    parameter initialisation uses torch's RNG.
    """

    def __init__(self, rep_in: Union[str, Rep], rep_out: Union[str, Rep], group: Union[str, Group],
                 ch: Union[int, str, Rep, Sequence[Union[int, str, Rep]]] = 384, num_layers: int = 3, *,
                 seed: int = 0, dtype: Optional[torch.dtype] = None, device: Optional[Union[str, torch.device]] = None):
        super().__init__()
        fk = factory_kwargs(dtype, device)
        self.group = check_real_group(as_group(group))
        self.rep_in = bind_rep(rep_in, self.group, "rep_in")
        self.rep_out = bind_rep(rep_out, self.group, "rep_out")
        self.in_features, self.out_features = self.rep_in.size, self.rep_out.size
        self.seed = as_seed(seed)
        self.hidden_reps = _hidden_reps(ch, _check_layers(num_layers), self.group, self.seed)
        reps = [self.rep_in] + self.hidden_reps
        _check_layer_sizes([r.size for r in reps] + [self.out_features], "EMLP", dtype)
        blocks = [EMLPBlock(a, b, seed=self.seed + i, **fk) for i, (a, b) in enumerate(zip(reps, reps[1:]))]
        self.network = nn.Sequential(*blocks, EquivariantLinear(reps[-1], self.rep_out, **fk))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        self._check_input(x)
        return _run_t(self.network, x, self.in_features, self.out_features)

    def regularization(self) -> torch.Tensor:
        """Zero: an exact EMLP has no regularizer (kept so every model can be trained the same way)."""
        return zero_scalar(self)

    def parameter_summary(self) -> Dict[str, object]:
        """Our trainable count vs. EMLP's reference implementation, which stores dense W, b (n_out n_in + n_out
        per linear layer) and projects them in every forward; its bilinear count equals ours."""
        rows, dense = [], 0
        for m in self.modules():
            if isinstance(m, EquivariantLinear):
                dense += m.out_features * m.in_features + m.out_features
                rows.append({"layer": "linear", "in": m.in_features, "out": m.out_features,
                             "equivariant": m.weight_dim + m.bias_dim,
                             "emlp_dense": m.out_features * m.in_features + m.out_features})
            elif isinstance(m, BiLinear):
                dense += m.weight_dim
                rows.append({"layer": "bilinear", "in": m.in_features, "out": m.out_features,
                             "equivariant": m.weight_dim, "emlp_dense": m.weight_dim})
        return {"n_parameters": self.n_parameters, "emlp_reference_stored": dense, "layers": rows,
                "hidden_rep": repr(self.hidden_reps[0]) if self.hidden_reps else None}

    def extra_repr(self) -> str:
        """Group, first hidden rep and depth, for ``repr(model)``."""
        h = self.hidden_reps[0] if self.hidden_reps else None
        return f"group={self.group.name}, hidden={h!r}, layers={len(self.hidden_reps)}"


class MLP(_ModelMixin, nn.Module):
    """Baseline MLP with the same width and depth: Linear + SiLU (swish) blocks; the group only sets sizes."""

    def __init__(self, rep_in: Union[str, Rep], rep_out: Union[str, Rep], group: Union[str, Group],
                 ch: Union[int, Sequence[int]] = 384, num_layers: int = 3, *, dtype: Optional[torch.dtype] = None,
                 device: Optional[Union[str, torch.device]] = None):
        super().__init__()
        fk = factory_kwargs(dtype, device)
        self.group = check_real_group(as_group(group))  # a complex group's reps are not real inputs, as for EMLP
        self.rep_in = bind_rep(rep_in, self.group, "rep_in")
        self.rep_out = bind_rep(rep_out, self.group, "rep_out")
        self.in_features, self.out_features = self.rep_in.size, self.rep_out.size

        def is_int(c):
            return isinstance(c, (int, np.integer)) and not isinstance(c, bool)

        if isinstance(ch, (list, tuple)) and all(is_int(c) for c in ch):
            widths = [int(c) for c in ch]
        elif is_int(ch):
            widths = [int(ch)] * _check_layers(num_layers)
        else:
            raise ConfigError(f"MLP needs an int ch (or a list of ints), got {ch!r}")
        if any(w < 1 for w in widths):
            raise ConfigError(f"hidden widths must be positive, got {widths}")
        sizes = [self.in_features] + widths
        _check_layer_sizes(sizes + [self.out_features], "MLP", dtype)
        layers: List[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b, **fk), nn.SiLU()]
        layers.append(nn.Linear(sizes[-1], self.out_features, **fk))
        self.network = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        self._check_input(x)
        return self.network(x)

    def regularization(self) -> torch.Tensor:
        """Zero: the baseline MLP has no regularizer (kept so every model can be trained the same way)."""
        return zero_scalar(self)


class RPP(_ModelMixin, nn.Module):
    """Residual pathway prior EMLP (Finzi, Benton & Wilson, NeurIPS 2021).

    Every linear layer is W = Q c + W_basic (and b likewise), the dense path initialised at 1e-3 of a dense
    init; the nonlinearity is the gated one plus ``w_gated * swish`` with ``w_gated`` initialised to 1e-3.
    ``regularization() = basic_wd ||W_basic||^2 + equiv_wd ||c||^2`` summed over layers (weights only, as in
    the RPP experiments).
    """

    def __init__(self, rep_in: Union[str, Rep], rep_out: Union[str, Rep], group: Union[str, Group],
                 ch: Union[int, str, Rep, Sequence[Union[int, str, Rep]]] = 384, num_layers: int = 3, *,
                 basic_wd: float = 1.0, equiv_wd: float = 1e-5, seed: int = 0, dtype: Optional[torch.dtype] = None,
                 device: Optional[Union[str, torch.device]] = None):
        super().__init__()
        fk = factory_kwargs(dtype, device)
        self.group = check_real_group(as_group(group))
        self.rep_in = bind_rep(rep_in, self.group, "rep_in")
        self.rep_out = bind_rep(rep_out, self.group, "rep_out")
        self.in_features, self.out_features = self.rep_in.size, self.rep_out.size
        for v, name in ((basic_wd, "basic_wd"), (equiv_wd, "equiv_wd")):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be a finite non-negative number, got {v!r}")
        self.basic_wd, self.equiv_wd = float(basic_wd), float(equiv_wd)
        self.seed = as_seed(seed)
        self.hidden_reps = _hidden_reps(ch, _check_layers(num_layers), self.group, self.seed)
        reps = [self.rep_in] + self.hidden_reps
        _check_layer_sizes([r.size for r in reps] + [self.out_features], "RPP", dtype)
        blocks = [
            EMLPBlock(a, b, seed=self.seed + i, swish_path=True, linear=RPPLinear(a, gated(b), **fk), **fk)
            for i, (a, b) in enumerate(zip(reps, reps[1:]))
        ]
        self.network = nn.Sequential(*blocks, RPPLinear(reps[-1], self.rep_out, **fk))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        self._check_input(x)
        return _run_t(self.network, x, self.in_features, self.out_features)

    def rpp_layers(self) -> List[RPPLinear]:
        """Every RPPLinear layer of the network, in order."""
        return [m for m in self.modules() if isinstance(m, RPPLinear)]

    def regularization(self) -> torch.Tensor:
        """The RPP prior ``basic_wd ||W_basic||^2 + equiv_wd ||c||^2`` summed over layers (add it to the loss)."""
        basic, equiv = zero_scalar(self), zero_scalar(self)
        for layer in self.rpp_layers():
            b, e = layer.l2()
            basic, equiv = basic + b, equiv + e
        return self.basic_wd * basic + self.equiv_wd * equiv

    def extra_repr(self) -> str:
        """Group and the two weight decays, for ``repr(model)``."""
        return f"group={self.group.name}, basic_wd={self.basic_wd:g}, equiv_wd={self.equiv_wd:g}"


class SoftEMLP(_ModelMixin, nn.Module):
    """Soft / mixed-symmetry EMLP with the projection-based equivariance regularizer (PER, Kim et al. 2023).

    ``groups`` (alias ``candidates=``): the candidate groups, a list of specs / Groups, or a dict {spec: strength}
    (see :class:`~softsym.soft.symmetry.SoftSymmetry`).

    The EMLP architecture built for ``full_group``: hidden reps
    ``uniform_rep(ch, full_group)``, bilinear layers and gates of full_group (hence exact for its subgroups),
    but every linear layer is dense (``nn.Linear``), plus the RPP swish path in the nonlinearity
    (``swish_path=False`` removes it; ``bilinear=False`` drops the bilinear layers, a cheaper variant).
    ``self.symmetry = SoftSymmetry(groups, strengths)``. Default ``full_group``: the candidate whose Lie algebra
    contains every other candidate's (preferring one whose gates and bilinear layers serve every candidate, then the
    largest, then the first; e.g. O(3) among O(3), O(2)@x, O(2)@z, and Signs(3) rather than S(3), whose pointwise
    gates would break the sign flips), which is also the candidate the PER tuner leaves unregularised. When the Lie algebras do not decide (all candidates
    finite, or none contains all the others) it is the first candidate, with a UserWarning in the second case:
    pass ``full_group=`` explicitly then (``build_model`` passes the task's group).

    ``layer_residuals()`` (L, J): R_lj = 1/2||W_l - P_j W_l||^2 + 1/2||b_l - P_j b_l||^2 with P_j the projector
    onto G_j-equivariant maps (layer reps re-bound to every candidate), factored per tensor block, never dense.
    ``residuals()`` (J,) sums over layers.

    ``penalty="loss"`` (PER): ``regularization() = symmetry.penalty(residuals())`` is added to the loss.
    ``penalty="prox"``: the same objective, applied as a preconditioned proximal step instead of through the loss:
    before every optimiser step the trainer calls :meth:`proximal_gradient` (the task gradient is shrunk towards
    each candidate's subspace, g <- g - f_j (g - P_j g)), after it :meth:`proximal_step` (the weights likewise),
    with f_j = lr lambda_j / (1 + lr lambda_j). lambda -> 0 is plain training; lambda -> infinity is Adam on the
    projected gradient of weights kept in the subspace, i.e. EMLP's own dense-then-project parameterisation. With a
    loss penalty a large lambda floods Adam's moments with penalty gradients and stalls learning; with the weight
    step alone, Adam's moments still carry the gradient's non-equivariant part and the equivariant steps shrink
    (MixedInertia o2z, lambda large on O(2)@z from the start, best validation MSE in 1500 epochs: loss 3+, weights
    only 2.08, gradient and weights 1.39; the exact O(2)@z EMLP: 1.69 / 2.39 with l1 / orthonormal coefficients).
    """

    def __init__(self, rep_in: Union[str, Rep], rep_out: Union[str, Rep],
                 groups: Optional[Union[Sequence[Union[str, Group]], Dict[str, float]]] = None,
                 ch: Union[int, str, Rep, Sequence[Union[int, str, Rep]]] = 128, num_layers: int = 3, *,
                 candidates: Optional[Union[Sequence[Union[str, Group]], Dict[str, float]]] = None,
                 full_group: Optional[Union[str, Group]] = None,
                 strengths: Union[float, Sequence[float], torch.Tensor] = DEFAULT_STRENGTHS, swish_path: bool = True,
                 bilinear: bool = True, penalty: str = "loss", seed: int = 0, names: Optional[Sequence[str]] = None,
                 dtype: Optional[torch.dtype] = None, device: Optional[Union[str, torch.device]] = None):
        super().__init__()
        if penalty not in ("loss", "prox"):
            raise ConfigError(f"SoftEMLP penalty must be 'loss' or 'prox', got {penalty!r}")
        self.penalty = penalty
        fk = factory_kwargs(dtype, device)
        self.symmetry = SoftSymmetry(_pick_candidates(groups, candidates), strengths, names=names)
        cands = [check_real_group(g) for g in self.symmetry.groups]
        self.groups = cands
        check_same_d(cands)
        serves_all = lambda g: all(architecture_mismatch(g, h, bilinear) is None for h in cands)  # noqa: E731
        covering = covering_candidate(cands, serves_all) if full_group is None else None
        self.full_group = check_real_group(parse_group(full_group)) if full_group is not None \
            else cands[0 if covering is None else covering]
        d = check_same_d(cands + [self.full_group], "candidate groups and full_group")
        for name, g in zip(self.symmetry.names, cands):
            why = architecture_mismatch(self.full_group, g, bilinear)
            if why is not None:
                raise ConfigError(f"candidate {name} cannot be made exactly equivariant in a SoftEMLP built for "
                                  f"{self.full_group.name}: {why}. Pass full_group= a group of the candidate's "
                                  f"kind (e.g. an orthogonal or general one containing every candidate), or drop "
                                  f"the candidate")
        if full_group is None and covering is None:  # after the checks: a refused candidate needs no warning
            _warn_first_candidate(cands, self.symmetry.names)
        self.seed = as_seed(seed)
        for spec, what in ((rep_in, "rep_in"), (rep_out, "rep_out")):
            if isinstance(spec, Rep) and spec.group is not None and spec.group.d != d:
                raise RepError(f"{what} {spec!r} is bound to {spec.group.name}, which acts on R^{spec.group.d}; "
                               f"the candidate groups act on R^{d}. Pass the rep unbound (e.g. a string)")
        self.rep_in_expr = as_unbound_rep(rep_in, "rep_in")
        self.rep_out_expr = as_unbound_rep(rep_out, "rep_out")
        self.rep_in = self.rep_in_expr.bind(self.full_group)
        self.rep_out = self.rep_out_expr.bind(self.full_group)
        self.in_features, self.out_features = self.rep_in.size, self.rep_out.size
        hidden = _hidden_reps(ch, _check_layers(num_layers), self.full_group, self.seed, unbound_d=d,
                              dual_differs=not self.full_group.is_orthogonal)
        self.hidden_reps = [h.bind(self.full_group) for h in hidden]
        _check_layer_sizes([self.in_features] + [h.size for h in self.hidden_reps] + [self.out_features], "SoftEMLP",
                           dtype)
        exprs = [self.rep_in_expr] + hidden
        layer_reps = []
        blocks: List[nn.Module] = []
        for i, (a, b) in enumerate(zip(exprs, exprs[1:])):
            b_full = b.bind(self.full_group)
            g_expr = gated(b, self.full_group)  # unbound, gates counted for the full group
            lin = nn.Linear(a.bind(self.full_group).size, g_expr.bind(self.full_group).size, **fk)
            blocks.append(EMLPBlock(self.rep_in if i == 0 else self.hidden_reps[i - 1], b_full,
                                    seed=self.seed + i, linear=lin, swish_path=swish_path, bilinear=bilinear,
                                    **fk))
            layer_reps.append((a, g_expr, True))
        final = nn.Linear(exprs[-1].bind(self.full_group).size, self.out_features, **fk)
        layer_reps.append((exprs[-1], self.rep_out_expr, True))
        self.network = nn.Sequential(*blocks, final)
        self.projection = ProjectionPlan(layer_reps, cands, **fk)
        self._layer_reps = layer_reps

    # ------------------------------------------------------------------ layers and residuals
    def linear_layers(self) -> List[nn.Linear]:
        """The dense linear layers (one per block, then the final one) whose weights the penalty acts on."""
        return [m.linear if isinstance(m, EMLPBlock) else m for m in self.network]

    def flat_parameters(self) -> torch.Tensor:
        """cat over linear layers of (vec W_l, b_l), differentiable."""
        return torch.cat([t for lin in self.linear_layers() for t in (lin.weight.reshape(-1), lin.bias)])

    def layer_residuals(self) -> torch.Tensor:
        """(L, J): 1/2 ||theta_l - P_j theta_l||^2 per linear layer l and candidate j."""
        return self.projection(self.flat_parameters())

    def residuals(self) -> torch.Tensor:
        """(J,): residual of every candidate group summed over layers."""
        return self.layer_residuals().sum(0)

    def regularization(self) -> torch.Tensor:
        """sum_j lambda_j R_j with the strengths of ``self.symmetry`` (zero with ``penalty="prox"``)."""
        if self.penalty == "prox":
            self._warn_if_prox_unused()
            return zero_scalar(self)
        return self.symmetry.penalty(self.residuals())

    def _warn_if_prox_unused(self) -> None:
        """Warn once when a training loop keeps asking for the (zero) loss penalty of ``penalty="prox"`` but never
        applies the proximal steps: the strengths then do nothing at all."""
        calls = self.__dict__.get("_reg_calls_without_prox", 0) + 1
        self.__dict__["_reg_calls_without_prox"] = calls
        if calls == 3 and bool((self.symmetry.strengths.detach() > 0).any()):
            warnings.warn("SoftEMLP(penalty='prox') adds nothing to the loss: in your own training loop call "
                          "model.proximal_gradient(lr) before and model.proximal_step(lr) after optimizer.step() "
                          "(softsym.Trainer does), or build it with penalty='loss'", UserWarning, stacklevel=3)

    def _prox_factors(self, lr: float) -> List[float]:
        lam = self.symmetry.strengths.detach().double().cpu()
        return [float(v) for v in (lr * lam / (1.0 + lr * lam))]

    @torch.no_grad()
    def proximal_step(self, lr: float) -> None:
        """With ``penalty="prox"``: theta <- prox of lr * sum_j lambda_j R_j (one candidate after the other)."""
        if self.penalty != "prox":
            return
        self.__dict__["_reg_calls_without_prox"] = -(1 << 62)  # the loop applies the prox: never warn
        factors = self._prox_factors(lr)
        if not any(factors):
            return
        theta = self.projection.shrink_(self.flat_parameters().detach().clone(), factors)
        self._write_flat(theta)

    @torch.no_grad()
    def proximal_gradient(self, lr: float) -> None:
        """With ``penalty="prox"``: shrink the linear layers' gradients like the weights (call before the optimiser
        step; layers without a gradient are left alone)."""
        if self.penalty != "prox":
            return
        factors = self._prox_factors(lr)
        tensors = [t for lin in self.linear_layers() for t in (lin.weight, lin.bias)]
        if not any(factors) or any(t.grad is None for t in tensors):
            return
        grads = torch.cat([t.grad.reshape(-1) for t in tensors])
        self._write_flat(self.projection.shrink_(grads, factors), grads=True)

    def _write_flat(self, theta: torch.Tensor, grads: bool = False) -> None:
        off = 0
        for lin in self.linear_layers():
            for t in (lin.weight, lin.bias):
                dst = t.grad if grads else t
                dst.copy_(theta[off:off + t.numel()].view_as(t))
                off += t.numel()

    @torch.no_grad()
    def project_(self, j: Union[int, str], *, swish_path: bool = True) -> "SoftEMLP":
        """Project every linear layer in place onto candidate ``j``'s equivariant subspace (index or name).

        With ``swish_path=True`` (default) the gates' swish-path weights ``w_gated`` are zeroed too: that
        residual-pathway term is equivariant to no candidate and not in the penalty, so only then is the model
        exactly equivariant to candidate j. ``swish_path=False`` leaves them as they are."""
        if isinstance(j, str):
            j = self._candidate_index(j)
        if not isinstance(j, (int, np.integer)) or isinstance(j, bool):  # int(0.5) would silently pick candidate 0
            raise ConfigError(f"candidate must be an integer index or a name {self.symmetry.names}, got {j!r}")
        if not (0 <= int(j) < len(self.groups)):
            raise ConfigError(f"candidate index {j} out of range 0..{len(self.groups) - 1}")
        self._write_flat(self.projection.project(self.flat_parameters().detach(), int(j)))
        if swish_path:
            with torch.no_grad():
                for m in self.modules():
                    if isinstance(m, GatedNonlinearity) and m.w_gated is not None:
                        m.w_gated.zero_()
        return self

    def _candidate_index(self, name: str) -> int:
        """Index of a candidate given by its name or any spelling of the same group ("o(3)", "O(3)@[1,2,3]:4")."""
        if name in self.symmetry.names:
            return self.symmetry.names.index(name)
        try:
            key = parse_group(name).key
        except SoftsymError:
            key = None
        for i, g in enumerate(self.groups):
            if key is not None and g.key == key:
                return i
        raise ConfigError(f"unknown candidate {name!r}; candidates: {self.symmetry.names}")

    def candidate_reps(self, j: int) -> Tuple[Rep, Rep]:
        """(rep_in, rep_out) bound to candidate j, e.g. to measure equivariance errors."""
        g = self.groups[j]
        return self.rep_in_expr.bind(g), self.rep_out_expr.bind(g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        self._check_input(x)
        return _run_t(self.network, x, self.in_features, self.out_features)

    def extra_repr(self) -> str:
        """Full group, first hidden rep, depth and penalty mode, for ``repr(model)``."""
        h = self.hidden_reps[0] if self.hidden_reps else None
        return (f"full_group={self.full_group.name}, hidden={h!r}, layers={len(self.hidden_reps)}, "
                f"penalty={self.penalty}")
