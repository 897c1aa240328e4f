"""Gated nonlinearity (EMLP): scalars get swish, every non-scalar tensor copy is scaled by sigmoid(its gate)."""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RepError
from ..groups.base import Group
from ..reps.base import Rep
from ._util import ExactBuffers, bind_rep, first_order_backward, factory_kwargs, use_plain_autograd
from .reps import gate_indices, num_gates

__all__ = ["GatedNonlinearity"]


class _GateFn(torch.autograd.Function):
    """out = sigmoid(vT[gate]) * vT[:n] (+ w * silu(vT[:n])) on (features, N) tensors, one autograd node.

    The sigmoid is taken once per distinct gate row (``gate_rows``, with ``inverse`` mapping each of the n rows to
    its gate), and the gate gradient sum_i g_i v_i over the rows sharing a gate is formed before the sigmoid's
    derivative is applied, so the full-size work is one gather and two products each way."""

    @staticmethod
    def forward(ctx, vT, w, gate_rows, inverse, n):
        v = vT[:n]
        sig = torch.sigmoid(vT.index_select(0, gate_rows))  # (distinct gates, N)
        sg = sig.index_select(0, inverse)
        out = sg * v
        if w is not None:
            sv = torch.sigmoid(v)
            out.addcmul_(w.unsqueeze(1), v * sv)
            ctx.save_for_backward(vT, sig, sg, sv, w, gate_rows, inverse)
        else:
            ctx.save_for_backward(vT, sig, sg, gate_rows, inverse)
        ctx.n, ctx.has_w = n, w is not None
        return out

    @staticmethod
    @first_order_backward("GatedNonlinearity")
    def backward(ctx, g):
        n = ctx.n
        if ctx.has_w:
            vT, sig, sg, sv, w, gate_rows, inverse = ctx.saved_tensors
        else:
            vT, sig, sg, gate_rows, inverse = ctx.saved_tensors
        v = vT[:n]
        gv = torch.zeros_like(vT)
        torch.mul(g, sg, out=gv[:n])
        # d sigmoid(z) / dz = s (1 - s), one factor per gate: sum the rows' g v first, then scale
        gz = torch.zeros_like(sig).index_add_(0, inverse, g * v)
        gz.mul_(sig * (1 - sig))
        gv.index_add_(0, gate_rows, gz)
        gw = None
        if ctx.has_w:
            silu = v * sv
            dsilu = sv * (1 + v * (1 - sv))
            gv[:n].addcmul_(g * w.unsqueeze(1), dsilu)
            gw = (g * silu).sum(1) if ctx.needs_input_grad[1] else None
        return gv, gw, None, None, None


class GatedNonlinearity(ExactBuffers):
    """Maps gated(rep) -> rep: out_i = sigmoid(values[gate(i)]) * values_i.

    A scalar is its own gate (swish); copy j of a non-scalar tensor uses the j-th appended gate scalar; for
    permutation groups every coordinate is its own gate (pointwise swish, as in EMLP).

    ``swish_path=True`` adds the residual-pathway term ``w_gated * swish(values[:n])`` of RPP / PER with a learned
    per-channel ``w_gated`` initialised to ``swish_scale`` (1e-3); that term is not equivariant.
    """

    def __init__(self, rep: Union[str, Rep], group: Optional[Union[str, Group]] = None, *, swish_path: bool = False,
                 swish_scale: float = 1e-3, dtype: Optional[torch.dtype] = None,
                 device: Optional[Union[str, torch.device]] = None):
        super().__init__()
        fk = factory_kwargs(dtype, device)
        self.rep = bind_rep(rep, group, "rep")
        self.out_features = self.rep.size
        self.in_features = self.out_features + num_gates(self.rep)
        gi = gate_indices(self.rep)
        self.identity_gates = bool(np.array_equal(gi, np.arange(self.out_features)))  # from numpy: works on "meta" too
        self.register_index("gate_index", gi, fk["device"])
        rows, inverse = np.unique(gi, return_inverse=True)  # distinct gate rows, and each row's position among them
        self.register_index("gate_rows", rows, fk["device"])
        self.register_index("gate_inverse", inverse.reshape(-1), fk["device"])
        self.swish_scale = float(swish_scale)
        if swish_path:
            self.w_gated = nn.Parameter(torch.full((self.out_features,), self.swish_scale, **fk))
        else:
            self.register_parameter("w_gated", None)

    def reset_parameters(self) -> None:
        """Reset the swish-path weights ``w_gated`` to ``swish_scale`` (no-op without the swish path)."""
        if self.w_gated is not None:
            with torch.no_grad():
                self.w_gated.fill_(self.swish_scale)

    def forward_t(self, vT: torch.Tensor) -> torch.Tensor:
        """(n + gates, N) -> (n, N), on feature-major tensors."""
        n = self.out_features
        if self.identity_gates:
            act = F.silu(vT)
            return act * (1.0 + self.w_gated).unsqueeze(1) if self.w_gated is not None else act
        if use_plain_autograd(vT) or (self.w_gated is not None and use_plain_autograd(self.w_gated)):
            v = vT[:n]
            out = torch.sigmoid(vT.index_select(0, self.gate_index)) * v
            return out + self.w_gated.unsqueeze(1) * F.silu(v) if self.w_gated is not None else out
        return _GateFn.apply(vT.contiguous(), self.w_gated, self.gate_rows, self.gate_inverse, n)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """(..., n + gates) -> (..., n): each value times the sigmoid of its gate (plus the swish path)."""
        if values.dim() == 0 or values.shape[-1] != self.in_features:
            raise RepError(f"GatedNonlinearity expects last dimension {self.in_features} (rep + gates), "
                           f"got shape {tuple(values.shape)}")
        if self.identity_gates:
            act = F.silu(values)
            return act * (1.0 + self.w_gated) if self.w_gated is not None else act
        v = values[..., : self.out_features]
        out = torch.sigmoid(values.index_select(-1, self.gate_index)) * v
        if self.w_gated is not None:
            out = out + self.w_gated * F.silu(v)
        return out

    def extra_repr(self) -> str:
        """Rep, number of gates and whether the swish path is on, for ``repr(module)``."""
        return (f"{self.rep!r}, gates={self.in_features - self.out_features}, "
                f"swish_path={self.w_gated is not None}")
