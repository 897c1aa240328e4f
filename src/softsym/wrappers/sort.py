"""S(n) canonicalization by sorting the elements of a set axis."""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError, ModelError, SoftsymError

__all__ = ["SortCanonicalize"]

#: most tie permutations averaged per input in the rep form (ties of distinct points' features are measure zero)
MAX_TIE_FRAMES = 720


def _point_features(rep, x: torch.Tensor) -> torch.Tensor:
    """(B, n, F) features of each of the n points that move with it under S(n): for every tensor copy of ``rep``
    its entries x[i] (rank 1), or per axis the sums over the other axes and the diagonal x[i, ..., i] (rank >= 2)."""
    b, n = x.shape[0], rep.group.d
    feats = []
    for comp in rep.components:
        r = len(comp.atoms)
        if r == 0:
            continue
        idx = torch.as_tensor(comp.indices(), device=x.device)  # (copies, n**r)
        t = x[:, idx].reshape(b, comp.count, *([n] * r))
        if r == 1:
            feats.append(t)
            continue
        for axis in range(2, r + 2):
            feats.append(t.sum(dim=[a for a in range(2, r + 2) if a != axis]))
        feats.append(_diagonal(t, r))
    if not feats:
        return x.new_zeros(b, n, 0)
    return torch.cat(feats, dim=1).transpose(1, 2)  # (B, n, F)


def _diagonal(t: torch.Tensor, r: int) -> torch.Tensor:
    """x[..., i, ..., i] of a (B, c, n, ..., n) tensor with r trailing axes: (B, c, n)."""
    n = t.shape[-1]
    ar = torch.arange(n, device=t.device)
    return t[(slice(None), slice(None)) + (ar,) * r]


class SortCanonicalize(nn.Module):
    """Permutation invariance / equivariance along a set axis by lexicographic sorting.

    The elements along ``set_axis`` are sorted lexicographically by their features (the entries of the trailing
    dimensions, flattened; ``key`` lists feature indices to compare first, the rest follow in order). The model
    sees the sorted set; for ``output="equivariant"`` its per-element outputs (along the same axis) are put back in
    the original order.

    Exactness: sorting is exact, so invariance / equivariance hold exactly (bit for bit) for any input. Ties are
    only possible between identical elements; for ``"invariant"`` they do not matter, for ``"equivariant"`` the
    outputs of identical elements are averaged (the average over the set's stabiliser), which keeps exactness.

    Rep form: ``SortCanonicalize(model, "S(n)", rep_in, rep_out)`` for inputs (batch, rep_in.size) of any S(n) rep
    (V, V**2, 2V + V0, Hom(V, V), ...). Each of the n points gets the features that move with it (its entries of
    every V copy; per axis the sums over the other axes, and the diagonal, of every higher tensor copy); the
    permutation P that sorts them lexicographically is an equivariant frame, so f(x) = rho_out(P)^T model(rho_in(P) x)
    is exactly equivariant. Points with identical features get every ordering of them, averaged (at most
    ``max_tie_frames`` orderings per input, with a warning beyond).

    Parameters
    ----------
    model : callable on the sorted input (same shape as x).
    output : "invariant" or "equivariant" (set form), or "S(n)" (rep form, then ``rep_in`` and ``rep_out``).
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

    def __init__(self, model: Callable, output="invariant", rep_in=None, rep_out=None, *, set_axis: int = 1,
                 key: Optional[Sequence[int]] = None, max_tie_frames: int = MAX_TIE_FRAMES) -> None:
        super().__init__()
        self.group = None
        if output not in ("invariant", "equivariant"):
            self._init_rep_form(model, output, rep_in, rep_out, max_tie_frames)
            return
        if rep_in is not None or rep_out is not None:
            raise ConfigError("rep_in / rep_out go with a group: SortCanonicalize(model, 'S(n)', rep_in, rep_out); "
                              f"the set form SortCanonicalize(model, {output!r}) takes none")
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

    def _init_rep_form(self, model, group, rep_in, rep_out, max_tie_frames) -> None:
        """SortCanonicalize(model, "S(n)", rep_in, rep_out): inputs and outputs are vectors of S(n) reps."""
        from ..groups.finite import S
        from ..groups.parse import parse_group
        from ..reps.algebra import rep as make_rep

        try:
            g = parse_group(group)
        except SoftsymError:
            raise ConfigError(f"output must be 'invariant' or 'equivariant' (a set axis), or the group 'S(n)' "
                              f"followed by rep_in and rep_out; got {group!r}") from None
        if not isinstance(g, S):
            raise ConfigError(f"sorting canonicalizes the full symmetric group S(n) only, got {g.name}; use "
                              "GroupAverage for other finite groups")
        if rep_in is None or rep_out is None:
            raise ConfigError(f"SortCanonicalize(model, {g.name!r}, rep_in, rep_out) needs both reps, e.g. 'V' and "
                              "'V0'")
        if isinstance(max_tie_frames, bool) or not isinstance(max_tie_frames, (int, np.integer)) or max_tie_frames < 1:
            raise ConfigError(f"max_tie_frames must be a positive integer, got {max_tie_frames!r}")
        self.model, self.group = model, g
        self.rep_in, self.rep_out = make_rep(rep_in, g), make_rep(rep_out, g)
        self.output, self.set_axis, self.key, self.max_tie_frames = "rep", None, None, int(max_tie_frames)

    def extra_repr(self) -> str:
        if self.group is not None:
            return f"{self.group.name}, {self.rep_in!r} -> {self.rep_out!r}"
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
        if self.group is not None:
            return self._forward_rep(x)
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

    # ------------------------------------------------------------------ rep form
    def _frames(self, x64: torch.Tensor):
        """Canonicalizing permutations: (M, n, n) matrices P with (P v)[i] = v[perm[i]] (features sorted), and the
        input row of each; inputs whose points tie get every ordering of the tied points (an equivariant frame)."""
        b, n = x64.shape[0], self.group.d
        feats = _point_features(self.rep_in, x64)
        perm = torch.arange(n, device=x64.device).expand(b, n).clone()
        for j in reversed(range(feats.shape[-1])):  # lexicographic: stable sorts from the least significant key
            vals = torch.gather(feats[..., j], 1, perm)
            perm = torch.gather(perm, 1, torch.sort(vals, dim=1, stable=True).indices)
        sorted_f = torch.gather(feats, 1, perm[..., None].expand_as(feats))
        tie = (sorted_f[:, 1:] == sorted_f[:, :-1]).all(dim=-1) if n > 1 else torch.zeros(b, 0, dtype=torch.bool)
        perms, owner = [perm], [torch.arange(b, device=x64.device)]
        rows = torch.nonzero(tie.any(dim=1)).flatten().tolist() if feats.shape[-1] else []
        if rows:
            keep = torch.ones(b, dtype=torch.bool, device=x64.device)
            keep[rows] = False
            perms, owner = [perm[keep]], [owner[0][keep]]
            for i in rows:
                extra = self._tie_orderings(perm[i], tie[i])
                perms.append(extra)
                owner.append(torch.full((len(extra),), i, dtype=torch.long, device=x64.device))
        perm, owner = torch.cat(perms), torch.cat(owner)
        mats = torch.zeros(len(perm), n, n, dtype=torch.float64, device=x64.device)
        mats.scatter_(2, perm[..., None], 1.0)
        return mats, owner

    def _tie_orderings(self, perm: torch.Tensor, tie: torch.Tensor) -> torch.Tensor:
        """Every reordering of ``perm`` within its runs of tied points (at most max_tie_frames of them)."""
        import itertools
        import warnings

        blocks, start = [], 0
        for k in range(1, len(perm) + 1):
            if k == len(perm) or not bool(tie[k - 1]):
                blocks.append(list(range(start, k)))
                start = k
        total = math.prod(math.factorial(len(bl)) for bl in blocks)
        if total > self.max_tie_frames:
            warnings.warn(f"SortCanonicalize: an input has {total} orderings of points with identical features; "
                          f"averaging over the first {self.max_tie_frames} only (raise max_tie_frames for exactness)",
                          UserWarning, stacklevel=3)
        out = []
        for combo in itertools.islice(itertools.product(*[itertools.permutations(bl) for bl in blocks]),
                                      self.max_tie_frames):
            order = [i for part in combo for i in part]
            out.append(perm[torch.as_tensor(order, device=perm.device)])
        return torch.stack(out)

    def _forward_rep(self, x: torch.Tensor) -> torch.Tensor:
        from ..metrics import require_real_finite

        n_in = self.rep_in.size
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != n_in:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"SortCanonicalize: inputs must be (batch, {n_in}) vectors of {self.rep_in!r}, got "
                            f"{shape}")
        require_real_finite(x, "SortCanonicalize")
        x64 = x.to(torch.float64)
        mats, owner = self._frames(x64.detach())
        canon = self.rep_in.rho(mats).apply(x64[owner]).to(x.dtype)
        y = self.model(canon)
        if not isinstance(y, torch.Tensor) or y.ndim == 0 or y.shape[0] != len(owner) or \
                y[0].numel() != self.rep_out.size:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ModelError(f"SortCanonicalize: the model must return (batch, {self.rep_out.size}) outputs of "
                             f"{self.rep_out!r}; got {shape} for a batch of {len(owner)}")
        out_dtype = y.dtype if y.is_floating_point() else torch.float64
        back = self.rep_out.rho(mats.transpose(1, 2)).apply(y.reshape(len(owner), -1).to(torch.float64))
        b = x.shape[0]
        if len(owner) == b and bool((owner == torch.arange(b, device=owner.device)).all()):
            out = back
        else:
            counts = torch.bincount(owner, minlength=b).to(torch.float64)
            out = torch.zeros(b, back.shape[1], dtype=torch.float64, device=back.device).index_add(0, owner, back)
            out = out / counts[:, None]
        return out.reshape(b, *y.shape[1:]).to(out_dtype)
