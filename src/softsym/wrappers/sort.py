"""S(n) canonicalization by sorting the elements of a set axis."""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError, ModelError

__all__ = ["SortCanonicalize"]


class SortCanonicalize(nn.Module):
    """Permutation invariance / equivariance along a set axis by lexicographic sorting.

    The elements along ``set_axis`` are sorted lexicographically by their features (the entries of the trailing
    dimensions, flattened; ``key`` lists feature indices to compare first, the rest follow in order). The model
    sees the sorted set; for ``output="equivariant"`` its per-element outputs (along the same axis) are put back in
    the original order.

    Exactness: sorting is exact, so invariance / equivariance hold exactly (bit for bit) for any input. Ties are
    only possible between identical elements; for ``"invariant"`` they do not matter, for ``"equivariant"`` the
    outputs of identical elements are averaged (the average over the set's stabiliser), which keeps exactness.

    Parameters
    ----------
    model : callable on the sorted input (same shape as x).
    output : "invariant" or "equivariant".
    set_axis : axis of x that S(n) permutes (default 1: x is (batch, n, ...) or (batch, n)).
    key : optional feature indices (into the flattened trailing dims) compared first.

    Example
    -------
    >>> import torch
    >>> from softsym.wrappers import SortCanonicalize
    >>> f = SortCanonicalize(torch.nn.Linear(5, 1), "invariant")
    >>> x = torch.randn(3, 5)
    >>> bool(torch.equal(f(x), f(x[:, torch.randperm(5)])))
    True
    """

    def __init__(self, model: Callable, output: str = "invariant", *, set_axis: int = 1,
                 key: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        if output not in ("invariant", "equivariant"):
            raise ConfigError(f"output must be 'invariant' or 'equivariant', got {output!r}")
        if isinstance(set_axis, bool) or not isinstance(set_axis, int):
            raise ConfigError(f"set_axis must be an integer axis (e.g. 1 for (batch, n, ...)), got {set_axis!r}")
        if set_axis == 0:
            raise ConfigError("set_axis must not be the batch axis 0")
        if key is not None:
            if isinstance(key, (str, bytes)) or not hasattr(key, "__iter__") or \
                    any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in key):
                raise ConfigError(f"key must be a sequence of integer feature indices, got {key!r}")
        self.model, self.output, self.set_axis = model, output, set_axis
        self.key = [int(k) for k in key] if key is not None else None

    def extra_repr(self) -> str:
        return f"output={self.output!r}, set_axis={self.set_axis}"

    def _axis(self, ndim: int) -> int:
        """``set_axis`` as a non-negative index into an input with ``ndim`` dims (a negative set_axis counts from
        the input's end; the same index is used for the output, which may have fewer trailing dims)."""
        if not -ndim <= self.set_axis < ndim or self.set_axis % ndim == 0:
            raise DataError(f"set_axis={self.set_axis} is not a set axis of an input with {ndim} dims (the batch "
                            "axis 0 cannot be permuted)")
        return self.set_axis % ndim

    def sort_permutation(self, x: torch.Tensor) -> torch.Tensor:
        """perm (B, n) with x_sorted[b, i] = x[b, perm[b, i]] (set axis moved to 1), lexicographic order."""
        xs = torch.movedim(x, self._axis(x.ndim), 1)
        b, n = xs.shape[:2]
        feats = xs.reshape(b, n, math.prod(xs.shape[2:])).detach()
        nf = feats.shape[-1]
        order = list(range(nf))
        if self.key is not None:
            bad = [k for k in self.key if not (-nf <= k < nf)]
            if bad:
                raise ConfigError(f"key indices {bad} out of range for {nf} features per element")
            first = [k % nf for k in self.key]
            order = first + [i for i in order if i not in first]
        perm = torch.arange(n, device=x.device).expand(b, n).clone()
        for j in reversed(order):  # successive stable sorts from the least significant key
            vals = torch.gather(feats[..., j], 1, perm)
            idx = torch.sort(vals, dim=1, stable=True).indices
            perm = torch.gather(perm, 1, idx)
        return perm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"SortCanonicalize needs a batch of sets (batch, n, ...) as a tensor, got {shape}")
        if x.is_complex():
            raise DataError("SortCanonicalize: complex inputs have no order; pass real features (e.g. "
                            "torch.view_as_real(x))")
        meta = x.device.type == "meta"  # shapes only (e.g. shape inference): no values to check or compare
        if not meta and torch.isnan(x).any():
            raise DataError("SortCanonicalize: NaN inputs cannot be sorted consistently; clean the data first")
        axis = self._axis(x.ndim)
        xs = torch.movedim(x, axis, 1)
        b, n = xs.shape[:2]
        perm = self.sort_permutation(x)
        gidx = perm.reshape(b, n, *([1] * (xs.ndim - 2))).expand_as(xs)
        sorted_x = torch.movedim(torch.gather(xs, 1, gidx), 1, axis)
        y = self.model(sorted_x)
        if self.output == "invariant":
            return y
        if not isinstance(y, torch.Tensor) or y.ndim <= axis:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ModelError(f"equivariant output must be a tensor keeping the set axis ({n} elements) at axis "
                             f"{axis}; got {shape}")
        ys = torch.movedim(y, axis, 1)
        if ys.shape[:2] != (b, n):
            raise ModelError(f"equivariant output must keep the set axis ({n} elements) at axis {axis}; "
                              f"got shape {tuple(y.shape)}")
        # average the outputs of identical elements (ties), exact stabiliser average
        flat_x = xs.reshape(b, n, math.prod(xs.shape[2:]))
        feats = torch.gather(flat_x, 1, perm[..., None].expand_as(flat_x))
        same = torch.zeros(b, n, dtype=torch.bool, device=x.device)
        same[:, 1:] = (feats[:, 1:] == feats[:, :-1]).all(dim=-1)
        if not meta and bool(same.any()):
            gid = torch.cumsum((~same).long(), dim=1) - 1 + torch.arange(b, device=x.device)[:, None] * n
            flat = ys.reshape(b * n, -1)
            sums = torch.zeros_like(flat).index_add(0, gid.reshape(-1), flat)
            cnt = torch.zeros(b * n, dtype=flat.dtype, device=x.device).index_add(
                0, gid.reshape(-1), torch.ones(b * n, dtype=flat.dtype, device=x.device))
            ys = (sums[gid.reshape(-1)] / cnt[gid.reshape(-1)][:, None]).reshape(ys.shape)
        inv = torch.argsort(perm, dim=1)
        gi = inv.reshape(b, n, *([1] * (ys.ndim - 2))).expand_as(ys)
        return torch.movedim(torch.gather(ys, 1, gi), 1, axis)
