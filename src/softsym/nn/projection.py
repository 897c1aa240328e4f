"""Projection residuals of dense layers w.r.t. several candidate groups (PER, Kim et al. ICML 2023).

For a layer with parameters theta_l = (vec W_l, b_l) and a candidate group G_j,
R_lj = 1/2 ||theta_l - P_j theta_l||^2 = 1/2 (||theta_l||^2 - ||Q_j^T theta_l||^2), with P_j = Q_j Q_j^T the
orthogonal projector onto the G_j-equivariant weights and biases (Hom(rep_in_l, rep_out_l) and rep_out_l bound
to G_j). Q_j is never formed: W and b split into pure tensor blocks whose placements are the same for every
candidate (all act on the same R^d); each block type has a small basis per candidate. All placements of one
block type, across layers and candidates, are handled by one gather and one or two matmuls.

The squared distance is computed directly (||Q_perp^T x||^2 with the block's orthogonal complement, or
||x - Q Q^T x||^2 for large blocks) rather than as a difference of two large norms, so a parameter vector that
lies in a candidate's subspace gives a residual at rounding level squared (~1e-32 relative in float64).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import numpy as np
import torch

from ..groups.base import Group
from ..reps.algebra import Hom
from ..reps.base import Rep
from ..reps.block import canonical_atoms
from ._util import ExactBuffers, block_basis, first_order_backward

__all__ = ["ProjectionPlan"]

#: blocks of at most this size use the orthogonal-complement path (one matmul); larger ones reconstruct x - QQ^Tx
PERP_MAX_BLOCK = 27


def _complement(q: np.ndarray) -> np.ndarray:
    s, r = q.shape
    if r == 0:
        return np.eye(s)
    u, _, _ = np.linalg.svd(q, full_matrices=True)
    return np.ascontiguousarray(u[:, r:])


class _ResidualFn(torch.autograd.Function):
    """The (L, J) residual matrix of a ProjectionPlan with a hand-written backward (one autograd node)."""

    @staticmethod
    def forward(ctx, theta, plan, mats):
        L, J = plan.num_layers, plan.num_groups
        parts = theta.index_select(0, plan.gather_index).split(plan._split)
        zs, saved = [], []
        for (path, n, s, width), x, m in zip(plan._meta, parts, mats):
            x = x.view(n, s)
            if path == "perp":
                y = x @ m
                zs.append(y.square().view(n, J, width).sum(2))
                saved.append(y)
            else:  # dev_j = Q_j Q_j^T x - x, (J, n, s); one copy of the bases is read twice
                y = (x @ m.view(s, J * width)).view(n, J, width).transpose(0, 1)
                dev = torch.bmm(y, m.permute(1, 2, 0)).sub_(x)
                zs.append(dev.square().sum(2).t())
                saved.append(dev)
        out = theta.new_zeros(L, J)
        if zs:
            out.index_add_(0, plan.row_layer, torch.cat(zs, 0) if len(zs) > 1 else zs[0])
        if plan.has_free:
            free = theta.new_zeros(L).index_add_(0, plan.free_layer, parts[-1].square())
            out.add_(free.unsqueeze(1))
        ctx.plan, ctx.mats, ctx.theta_shape = plan, mats, theta.shape
        ctx.save_for_backward(*saved, *([parts[-1]] if plan.has_free else []))
        return out.mul_(0.5)

    @staticmethod
    @first_order_backward("SoftEMLP residuals")
    def backward(ctx, g):
        plan, mats = ctx.plan, ctx.mats
        J = plan.num_groups
        saved = ctx.saved_tensors
        g = g.contiguous()
        grows = g.index_select(0, plan.row_layer) if len(plan.row_layer) else None  # (rows, J)
        dxs, r0 = [], 0
        for k, ((path, n, s, width), m) in enumerate(zip(plan._meta, mats)):
            gk = grows[r0:r0 + n]
            r0 += n
            if path == "perp":  # z = 1/2 sum_w y^2 -> dy = y g
                dy = saved[k].view(n, J, width) * gk.unsqueeze(2)
                dxs.append((dy.view(n, J * width) @ m.t()).view(-1))
            else:  # z = 1/2 |dev|^2 with dev = P x - x, P an orthogonal projector: dz/dx = x - P x = -dev
                dxs.append((saved[k] * gk.t().unsqueeze(2)).sum(0).neg_().reshape(-1))
        if plan.has_free:
            xf = saved[-1]
            dxs.append(xf * g.sum(1).index_select(0, plan.free_layer))
        dtheta = g.new_zeros(ctx.theta_shape)
        dtheta.index_add_(0, plan.gather_index, torch.cat(dxs) if len(dxs) > 1 else dxs[0])
        return dtheta, None, None


class ProjectionPlan(ExactBuffers):
    """Residuals (L, J) of L dense layers for J candidate groups.

    Parameters
    ----------
    layers : list of (rep_in, rep_out, has_bias) with *unbound* reps (re-bound to every candidate).
    groups : candidate groups (same d).

    ``forward(theta)`` takes the concatenation of (vec W_l, b_l) over layers (W row-major (out, in)) and returns
    the (L, J) residual matrix, differentiable.
    """

    def __init__(self, layers: Sequence[Tuple[Rep, Rep, bool]], groups: Sequence[Group], *, dtype: torch.dtype,
                 device: Union[str, torch.device]):
        super().__init__()
        self.groups = list(groups)
        self.num_layers, self.num_groups = len(layers), len(self.groups)
        g0 = self.groups[0]
        entries = {}
        self.layer_sizes: List[int] = []
        self.layer_shapes: List[Tuple[int, int, bool]] = []
        off = 0
        for l, (rin, rout, has_bias) in enumerate(layers):
            bi, bo = rin.bind(g0), rout.bind(g0)
            n_in, n_out = bi.size, bo.size
            self.layer_shapes.append((n_out, n_in, bool(has_bias)))
            parts = [(Hom(bi, bo).components, off)]
            if has_bias:
                parts.append((bo.components, off + n_out * n_in))
            for comps, base in parts:
                for comp in comps:
                    key = tuple(canonical_atoms(g, comp.atoms) for g in self.groups)
                    e = entries.setdefault(key, {"atoms": comp.atoms, "pos": [], "layer": []})
                    e["pos"].append(comp.indices() + base)
                    e["layer"].append(np.full(comp.count, l, np.int64))
            size = n_out * n_in + (n_out if has_bias else 0)
            self.layer_sizes.append(size)
            off += size
        self.total = off
        self._masters: List[Tuple[np.ndarray, List[np.ndarray]]] = []  # (pos, [Q_j]) for projections
        self._meta: List[tuple] = []
        gathers, free_layer, row_layer = [], [], []
        free_pos = []
        J = self.num_groups
        for i, (key, e) in enumerate(entries.items()):
            pos, lay = np.concatenate(e["pos"], 0), np.concatenate(e["layer"])
            qs = [block_basis(g, e["atoms"]) for g in self.groups]
            self._masters.append((pos, qs))
            rs = [q.shape[1] for q in qs]
            s = pos.shape[1]
            if all(r == s for r in rs):  # invariant under every candidate: never a residual
                continue
            if sum(rs) == 0:  # nothing invariant for any candidate: the whole block is residual
                free_pos.append(pos.reshape(-1))
                free_layer.append(np.repeat(lay, s))
                continue
            gathers.append(pos.reshape(-1))
            row_layer.append(lay)
            if s <= PERP_MAX_BLOCK:  # squared norm of the complement coordinates, padded per candidate
                perps = [_complement(q) for q in qs]
                width = max(p.shape[1] for p in perps)
                m = np.zeros((s, J, width))
                for j, p in enumerate(perps):
                    m[:, j, :p.shape[1]] = p
                self.register_exact(f"m{len(self._meta)}", m.reshape(s, J * width), dtype, device)
                self._meta.append(("perp", pos.shape[0], s, width))
            else:  # x - Q Q^T x per candidate, with the bases padded to the largest one: (s, J, w)
                width = max(rs)
                q = np.zeros((s, J, width))
                for j, qj in enumerate(qs):
                    q[:, j, :qj.shape[1]] = qj
                self.register_exact(f"m{len(self._meta)}", q, dtype, device)
                self._meta.append(("recon", pos.shape[0], s, width))
        self.has_free = bool(free_pos)
        if free_pos:
            gathers.append(np.concatenate(free_pos))
        self._split = [g.size for g in gathers]
        empty = np.zeros(0, np.int64)
        self.register_index("gather_index", np.concatenate(gathers) if gathers else empty, device)
        self.register_index("row_layer", np.concatenate(row_layer) if row_layer else empty, device)
        self.register_index("free_layer", np.concatenate(free_layer) if free_layer else empty, device)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        """(L, J) residuals 1/2 ||theta_l - P_j theta_l||^2 for theta = cat_l(vec W_l, b_l)."""
        if not self._split:
            return theta.new_zeros(self.num_layers, self.num_groups)
        mats = [getattr(self, f"m{i}") for i in range(len(self._meta))]
        return _ResidualFn.apply(theta, self, mats)

    @torch.no_grad()
    def project(self, theta: torch.Tensor, j: int) -> torch.Tensor:
        """P_j theta (every layer's weights and bias projected onto candidate j's equivariant subspace)."""
        out = torch.zeros_like(theta)
        for pos, qs in self._masters:
            q = torch.as_tensor(np.array(qs[j]), dtype=theta.dtype, device=theta.device)
            if q.shape[1] == 0:
                continue
            p = torch.as_tensor(pos, device=theta.device)
            out[p] = (theta[p] @ q) @ q.T
        return out

    @torch.no_grad()
    def shrink_(self, theta: torch.Tensor, factors: Sequence[float]) -> torch.Tensor:
        """In place, for every candidate j in turn: theta <- theta - f_j (theta - P_j theta), 0 <= f_j <= 1.

        With f_j = eta lambda_j / (1 + eta lambda_j) this is the proximal step of the penalty
        lambda_j R_j = lambda_j/2 ||theta - P_j theta||^2 (exact for one candidate; the candidates are applied one
        after the other, a standard splitting). f_j = 1 is the projection P_j.
        """
        f = [float(v) for v in factors]
        if len(f) != self.num_groups or any(not (0.0 <= v <= 1.0) for v in f):
            raise ValueError(f"shrink_ needs {self.num_groups} factors in [0, 1], got {f}")
        gather, pieces = self._device_masters(theta)
        if not pieces:
            return theta
        flat = theta.reshape(-1) if theta.is_contiguous() else theta.contiguous().reshape(-1)
        parts = flat.index_select(0, gather).split([n * s for n, s, _ in pieces])
        out = []
        for (n, s, qs), x in zip(pieces, parts):
            x = x.view(n, s)
            for fj, q in zip(f, qs):
                if fj == 0.0:
                    continue
                if q is None:  # nothing invariant for this candidate: x <- (1 - f) x
                    x = x * (1.0 - fj)
                else:  # x <- x - f (x - x Q Q^T) = (1 - f) x + f (x Q) Q^T, one fused GEMM
                    x = torch.addmm(x, x @ q, q.t(), beta=1.0 - fj, alpha=fj)
            out.append(x.reshape(-1))
        flat.index_copy_(0, gather, torch.cat(out) if len(out) > 1 else out[0])
        if flat.data_ptr() != theta.data_ptr():
            theta.copy_(flat.view_as(theta))
        return theta

    def _device_masters(self, like: torch.Tensor):
        """(gather index, [(n, s, [Q_j or None])]) on like's device / dtype (cached): the positions of every block
        type that some candidate constrains, in one index, and the block types' bases (None: no invariant)."""
        key = (like.dtype, like.device)
        cache = getattr(self, "_dm_cache", None)
        if cache is None or cache[0] != key:
            positions, pieces = [], []
            for pos, qs in self._masters:
                if all(q.shape[1] == q.shape[0] for q in qs):
                    continue
                positions.append(pos.reshape(-1))
                pieces.append((pos.shape[0], pos.shape[1],
                               [None if q.shape[1] == 0 else torch.tensor(np.array(q), dtype=like.dtype,
                                                                          device=like.device) for q in qs]))
            gather = torch.as_tensor(np.concatenate(positions) if positions else np.zeros(0, np.int64),
                                     device=like.device)
            cache = self._dm_cache = (key, (gather, pieces))
        return cache[1]

    def extra_repr(self) -> str:
        """Layers, candidate names, block types and parameter count, for ``repr(plan)``."""
        return (f"layers={self.num_layers}, candidates=[{', '.join(g.name for g in self.groups)}], "
                f"block types={len(self._masters)}, parameters={self.total}")
