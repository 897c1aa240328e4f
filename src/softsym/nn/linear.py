"""Equivariant linear layers parameterised by basis coefficients: W = Q c, never a dense projector.

The structure of Q is read once, at construction, from the components (pure tensor blocks) of
Hom(rep_in, rep_out) = rep_out (x) rep_in*: every block type has one small orthonormal basis (s, r) from the
cached solver, and W is assembled per distinct block type by one batched matmul, then one scatter of all the
blocks into the (out, in) matrix. Coefficient order is that of :class:`softsym.Basis` for the same Hom rep, so
``equivariant_basis(Hom(rep_in, rep_out)).expand(layer.basis_coefficients()[0])`` reproduces ``layer.weight``.

Step sizes. EMLP trains a dense W_dense and uses P W_dense; softsym trains the coefficients c of the orthonormal
basis (``coef_scale="none"``, the default). With EMLP's protocol (Adam 3e-3 at a constant rate, 900 epochs) this
reproduces EMLP's published test errors on O5Synthetic, Inertia and ParticleInteraction. ``coef_scale="l1"``
multiplies each coefficient by ||q_i||_1 (the step of Adam on a dense W_dense along a basis vector with its own
support): it trains O(3) models several times faster early on (Inertia: val MSE 1.2 vs 3.6 after 100 epochs of a
cosine schedule) but made the Lorentz-invariant ParticleInteraction unstable at lr 3e-3 (test MSE 1.0e-3 vs 3.9e-4).
``coef_scale="emlp"`` is a milder variant (see :func:`_coefficient_scales`).
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, RepError
from ..groups.base import Group
from ..reps.algebra import Hom
from ..reps.base import Rep
from ..reps.block import canonical_atoms
from ._util import ExactBuffers, bind_rep, block_basis, check_real_group, copy_table, factory_kwargs

__all__ = ["EquivariantLinear", "RPPLinear", "ExpandPlan", "COEF_SCALES"]

#: Parameterisations of EquivariantLinear's coefficients (see the module docstring).
COEF_SCALES = ("l1", "emlp", "none")


def _coefficient_scales(q: np.ndarray, coef_scale: str) -> np.ndarray:
    """Per basis vector (column of the block basis q (s, r)) multiplier of its trained coefficient.

    "l1": ||q_i||_1. "emlp": sum_k q_ki^2 / ||q_k,:||_2, the step along q_i of Adam on EMLP's dense, projected
    weights when the gradient noise is spread evenly over the basis directions (equal to ||q_i||_1 when the basis
    vectors have disjoint supports, smaller where they overlap). "none": 1.
    """
    if coef_scale == "l1":
        return np.abs(q).sum(0)
    if coef_scale == "emlp":
        rows = np.linalg.norm(q, axis=1)
        keep = rows > 1e-12
        return (q[keep] ** 2 / rows[keep, None]).sum(0)
    return np.ones(q.shape[1])


class ExpandPlan:
    """Index structure of v = Q c for a bound rep (numpy, built once).

    ``groups``: one entry per distinct block basis with r > 0: Q (s, r), coefficient indices (N, r) into c,
    positions (N, s) into v, and the copy id (of ``copy_of``) that each placement belongs to.
    """

    def __init__(self, rep: Rep, copy_of_position=None, coef_scale: str = "none"):
        if coef_scale not in COEF_SCALES:
            raise ConfigError(f"coef_scale must be one of {COEF_SCALES}, got {coef_scale!r}")
        group = rep._require_group()
        self.size = rep.size
        col = 0
        entries: Dict[tuple, dict] = {}
        for comp in rep.components:
            q = block_basis(group, comp.atoms)
            r = q.shape[1]
            cols = col + np.arange(comp.count * r, dtype=np.int64).reshape(comp.count, r)
            col += comp.count * r
            if r == 0:
                continue
            key = canonical_atoms(group, comp.atoms)
            alpha = _coefficient_scales(q, coef_scale)
            e = entries.setdefault(key, {"Q": q, "alpha": alpha, "coef": [], "pos": [], "copy": []})
            e["coef"].append(cols)
            pos = comp.indices()
            e["pos"].append(pos)
            if copy_of_position is not None:
                e["copy"].append(copy_of_position(pos[:, 0]))
        self.dim = col
        self.groups: List[dict] = []
        self.alpha = np.ones(self.dim)
        for key, e in entries.items():
            coef = np.concatenate(e["coef"], 0)
            flat = coef.reshape(-1)
            contiguous = bool(np.array_equal(flat, np.arange(flat[0], flat[0] + flat.size)))
            self.groups.append({
                "atoms": key, "Q": e["Q"], "alpha": e["alpha"], "coef": coef, "pos": np.concatenate(e["pos"], 0),
                "copy": np.concatenate(e["copy"]) if e["copy"] else None,
                "contiguous": contiguous, "start": int(flat[0]),
            })
            self.alpha[coef] = e["alpha"][None, :]
        self.positions = (np.concatenate([g["pos"].reshape(-1) for g in self.groups])
                          if self.groups else np.zeros(0, np.int64))


class _Expander(ExactBuffers):
    """Buffers and the forward of an :class:`ExpandPlan` (shared by weights and biases)."""

    def __init__(self, plan: ExpandPlan, shape: Tuple[int, ...], dtype, device):
        super().__init__()
        self.shape = tuple(shape)
        self.dim = plan.dim
        self.n = int(np.prod(shape))
        self._meta: List[tuple] = []
        for i, g in enumerate(plan.groups):
            self.register_exact(f"q{i}", (g["Q"] * g["alpha"][None, :]).T.copy(), dtype, device)  # (r, s)
            if g["contiguous"]:
                self._meta.append((True, g["start"], g["coef"].shape[0], g["coef"].shape[1]))
            else:
                self.register_index(f"c{i}", g["coef"], device)
                self._meta.append((False, 0, g["coef"].shape[0], g["coef"].shape[1]))
        self.register_index("positions", plan.positions, device)
        self.register_exact("alpha", plan.alpha, dtype, device)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, dim={self.dim}, block types={len(self._meta)}"

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        if not self._meta:
            return c.new_zeros(self.shape)
        vals = []
        for i, (contig, start, n, r) in enumerate(self._meta):
            coef = c[start:start + n * r].view(n, r) if contig else c[getattr(self, f"c{i}")]
            vals.append((coef @ getattr(self, f"q{i}")).reshape(-1))
        v = vals[0] if len(vals) == 1 else torch.cat(vals)
        return c.new_zeros(self.n).index_copy_(0, self.positions, v).view(self.shape)


def _adjoint(expander: nn.Module, like: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Q^T vec(target) for the linear map c -> Q c implemented by ``expander`` (its adjoint, via autograd)."""
    if like.numel() == 0:
        return like.detach().clone()
    with torch.enable_grad():
        c = torch.zeros_like(like, requires_grad=True)
        (grad,) = torch.autograd.grad((expander(c) * target).sum(), c)
    return grad


def _check_group_arg(group, layer: str) -> None:
    """Refuse a bool in the group slot: before ``group`` became positional, a third argument meant nothing else."""
    if isinstance(group, (bool, np.bool_)):
        raise ConfigError(f"{layer}'s third argument is the group (e.g. 'O(3)'), got {group!r}; options such as bias "
                          "are keywords: bias=False")


class EquivariantLinear(nn.Module):
    """Linear map rep_in -> rep_out that commutes with the group: y = W x + b, W = Q c, b = Q_b c_b.

    Parameters
    ----------
    rep_in, rep_out : Rep bound to one group, or rep strings with ``group``.
    group : Group or spec string used to bind unbound reps / strings; third positional argument (as for EMLP, MLP,
        RPP) or keyword.
    bias : learn an invariant bias (coefficients of the invariant basis of rep_out).
    dtype, device : of parameters and basis buffers (float32 by default; ``.double()`` keeps bases exact).

    coef_scale : "none" (default) trains the orthonormal-basis coefficients; "l1" / "emlp" scale each trained
        coefficient up (larger Adam steps along each basis vector, see the module docstring).

    ``weight_coef`` has ``dim`` = dim of the equivariant basis of Hom(rep_in, rep_out) entries;
    :meth:`basis_coefficients` converts it to the coefficients of :class:`softsym.Basis`. Initialisation is EMLP's
    (a projected dense init, :meth:`reset_parameters`). In eval mode under ``torch.no_grad()`` the assembled W and
    b are cached until the parameters change.
    """

    def __init__(self, rep_in: Union[str, Rep], rep_out: Union[str, Rep], group: Optional[Union[str, Group]] = None, *,
                 bias: bool = True, coef_scale: str = "none", dtype: Optional[torch.dtype] = None,
                 device: Optional[Union[str, torch.device]] = None):
        super().__init__()
        fk = factory_kwargs(dtype, device)
        _check_group_arg(group, "EquivariantLinear")
        self.rep_in = bind_rep(rep_in, group, "rep_in")
        self.rep_out = bind_rep(rep_out, group if group is not None else self.rep_in.group, "rep_out")
        if self.rep_in.group != self.rep_out.group:
            raise RepError(
                f"rep_in is bound to {self.rep_in.group.name} but rep_out to {self.rep_out.group.name}; "
                "an equivariant layer needs both reps of the same group"
            )
        self.group = check_real_group(self.rep_in.group)
        self.in_features, self.out_features = self.rep_in.size, self.rep_out.size
        copy_of, self._copy_sizes, _ = copy_table(self.rep_out)
        n_in = self.in_features
        self.coef_scale = coef_scale
        self._w_plan = ExpandPlan(Hom(self.rep_in, self.rep_out), lambda p: copy_of[p // n_in], coef_scale)
        self.weight_expander = _Expander(self._w_plan, (self.out_features, self.in_features), **fk)
        self.weight_coef = nn.Parameter(torch.empty(self._w_plan.dim, **fk))
        if bias:
            self._b_plan = ExpandPlan(self.rep_out, lambda p: copy_of[p], coef_scale)
            self.bias_expander = _Expander(self._b_plan, (self.out_features,), **fk)
            self.bias_coef = nn.Parameter(torch.empty(self._b_plan.dim, **fk))
        else:
            self._b_plan = None
            self.bias_expander = None
            self.register_parameter("bias_coef", None)
        if self._w_plan.dim == 0:
            warnings.warn(
                f"EquivariantLinear({self.rep_in!r} -> {self.rep_out!r}) under {self.group.name} has no "
                "equivariant weights (empty basis); its weight is identically zero",
                RuntimeWarning, stacklevel=2,
            )
        self._cache: Optional[tuple] = None
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters
    @property
    def weight_dim(self) -> int:
        """Number of trainable weight coefficients (dim of the equivariant basis of Hom(rep_in, rep_out))."""
        return self._w_plan.dim

    @property
    def bias_dim(self) -> int:
        """Number of trainable bias coefficients (dim of rep_out's invariant subspace; 0 without bias)."""
        return 0 if self._b_plan is None else self._b_plan.dim

    def reset_parameters(self) -> None:
        """EMLP's initialisation: W = P W_dense and b = P_b b_dense with W_dense, b_dense drawn like nn.Linear's
        default (uniform, bound 1/sqrt(fan_in)); the coefficients are Q^T vec(W_dense) (divided by the
        ``coef_scale`` factors).

        Projecting keeps only the equivariant share (basis dim / (out * in)) of the dense init's energy, which
        keeps the quadratic bilinear layers of a deep EMLP from blowing up activations at initialisation.
        """
        bound = 1.0 / math.sqrt(max(self.in_features, 1))
        with torch.no_grad():
            w_dense = torch.empty(self.out_features, self.in_features, dtype=self.weight_coef.dtype,
                                  device=self.weight_coef.device).uniform_(-bound, bound)
            a = self.weight_expander.alpha
            self.weight_coef.copy_(_adjoint(self.weight_expander, self.weight_coef, w_dense) / (a * a))
            if self.bias_coef is not None:
                b_dense = torch.empty(self.out_features, dtype=self.bias_coef.dtype,
                                      device=self.bias_coef.device).uniform_(-bound, bound)
                a = self.bias_expander.alpha
                self.bias_coef.copy_(_adjoint(self.bias_expander, self.bias_coef, b_dense) / (a * a))
        self._cache = None

    def basis_coefficients(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(weight, bias) coefficients in the orthonormal bases of :func:`softsym.equivariant_basis`
        (``Hom(rep_in, rep_out)`` and ``rep_out``), differentiable."""
        b = None if self.bias_coef is None else self.bias_coef * self.bias_expander.alpha
        return self.weight_coef * self.weight_expander.alpha, b

    @property
    def weight(self) -> torch.Tensor:
        """The (out, in) equivariant weight matrix (differentiable in ``weight_coef``)."""
        return self.weight_expander(self.weight_coef)

    @property
    def bias(self) -> Optional[torch.Tensor]:
        """The (out,) invariant bias (differentiable in ``bias_coef``), or None without bias."""
        if self.bias_coef is None:
            return None
        return self.bias_expander(self.bias_coef)

    def _weights(self):
        if self.training or torch.is_grad_enabled():
            self._cache = None
            return self.weight, self.bias
        key = (self.weight_coef._version, self.weight_coef.data_ptr(), self.weight_coef.dtype,
               self.weight_coef.device,
               None if self.bias_coef is None else (self.bias_coef._version, self.bias_coef.data_ptr()))
        # the coefficients' values are compared too: an edit through ``p.data`` (EMA, clipping code) changes neither
        # the version counter nor the pointer (the coefficients are small next to the expanded weights)
        wc = self.weight_coef.detach()
        bc = None if self.bias_coef is None else self.bias_coef.detach()
        c = self._cache
        if (c is None or c[0] != key or not torch.equal(c[3], wc)
                or (bc is not None and not torch.equal(c[4], bc))):
            self._cache = (key, self.weight, self.bias, wc.clone(), None if bc is None else bc.clone())
        return self._cache[1], self._cache[2]

    def train(self, mode: bool = True) -> "EquivariantLinear":
        """nn.Module.train, also dropping the cached eval-mode W and b."""
        self._cache = None
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = W x + b for x of shape (..., in); returns (..., out)."""
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise RepError(
                f"EquivariantLinear expects inputs with last dimension {self.in_features} (rep {self.rep_in!r}), "
                f"got shape {tuple(x.shape)}"
            )
        w, b = self._weights()
        return F.linear(x, w, b)

    def forward_t(self, xT: torch.Tensor) -> torch.Tensor:
        """(in, N) -> (out, N) on feature-major tensors."""
        w, b = self._weights()
        return torch.mm(w, xT) if b is None else torch.addmm(b.unsqueeze(1), w, xT)

    def extra_repr(self) -> str:
        """Reps, group, sizes and basis dimensions, for ``repr(layer)``."""
        return (f"{self.rep_in!r} -> {self.rep_out!r}, group={self.group.name}, in={self.in_features}, "
                f"out={self.out_features}, weight_dim={self.weight_dim}, bias_dim={self.bias_dim}")

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None
        return state


class RPPLinear(nn.Module):
    """Residual-pathway-prior linear layer (Finzi, Benton & Wilson, NeurIPS 2021): W = Q c + W_basic,
    b = Q_b c_b + b_basic. The dense path starts at ``basic_scale`` (1e-3) times a dense nn.Linear init."""

    def __init__(self, rep_in: Union[str, Rep], rep_out: Union[str, Rep], group: Optional[Union[str, Group]] = None, *,
                 basic_scale: float = 1e-3, dtype: Optional[torch.dtype] = None,
                 device: Optional[Union[str, torch.device]] = None):
        super().__init__()
        fk = factory_kwargs(dtype, device)
        _check_group_arg(group, "RPPLinear")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            self.equivariant = EquivariantLinear(rep_in, rep_out, group=group, **fk)
        self.in_features, self.out_features = self.equivariant.in_features, self.equivariant.out_features
        self.basic_scale = float(basic_scale)
        self.weight_basic = nn.Parameter(torch.empty(self.out_features, self.in_features, **fk))
        self.bias_basic = nn.Parameter(torch.empty(self.out_features, **fk))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise the equivariant part (EMLP's init) and the dense path (``basic_scale`` x nn.Linear's)."""
        self.equivariant.reset_parameters()
        bound = 1.0 / math.sqrt(max(self.in_features, 1))
        with torch.no_grad():
            self.weight_basic.uniform_(-bound, bound).mul_(self.basic_scale)
            self.bias_basic.uniform_(-bound, bound).mul_(self.basic_scale)

    @property
    def weight(self) -> torch.Tensor:
        """W = Q c + W_basic, (out, in)."""
        return self.equivariant.weight + self.weight_basic

    @property
    def bias(self) -> torch.Tensor:
        """b = Q_b c_b + b_basic, (out,)."""
        return self.equivariant.bias + self.bias_basic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = W x + b for x of shape (..., in); returns (..., out)."""
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise RepError(f"RPPLinear expects inputs with last dimension {self.in_features}, got {tuple(x.shape)}")
        return F.linear(x, self.weight, self.bias)

    def forward_t(self, xT: torch.Tensor) -> torch.Tensor:
        """(in, N) -> (out, N) on feature-major tensors."""
        return torch.addmm(self.bias.unsqueeze(1), self.weight, xT)

    def l2(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(||W_basic||^2, ||c||^2): the two weight norms of the RPP prior (biases are not regularised)."""
        return self.weight_basic.square().sum(), self.equivariant.weight_coef.square().sum()

    def extra_repr(self) -> str:
        """The dense path's initial scale, for ``repr(layer)``."""
        return f"basic_scale={self.basic_scale:g}"
