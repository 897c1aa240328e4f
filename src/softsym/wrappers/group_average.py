"""Group averaging (Reynolds operator) around any model: f_G(x) = mean_g rho_out(g)^-1 f(rho_in(g) x)."""
from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from .. import defaults
from ..defaults import DEFAULT_MC_SAMPLES  # re-exported: softsym.wrappers.group_average.DEFAULT_MC_SAMPLES
from ..errors import ConfigError, DataError, ModelError
from ..groups.parse import parse_group
from ..metrics import (_check_output, act_each, call_model, check_seed, finite_elements, model_dtype_device,
                       require_real_finite)
from ..reps.algebra import rep as _make_rep

__all__ = ["GroupAverage", "DEFAULT_MC_SAMPLES"]

log = logging.getLogger(__name__)



class GroupAverage(nn.Module):
    """Symmetrise any model by averaging over a group: f_G(x) = mean_g rho_out(g)^-1 f(rho_in(g) x).

    * Finite groups (enumerable, ``n_samples=None``): the average runs over **every** element, so f_G is exactly
      equivariant (up to float64 round-off, ~1e-15 relative) for any f. Cost: |G| forward passes per input.
    * Compact continuous groups (O(n), SO(n), O(2)@z, ...): Monte-Carlo average over ``n_samples`` Haar samples,
      equivariant in distribution with error ~ 1/sqrt(n_samples). In training mode fresh samples are drawn every
      call; in eval mode the samples are fixed (drawn once from ``seed``) when a seed is given, fresh otherwise.
    * Non-compact groups have no finite invariant measure and raise ConfigError (use a penalty instead).

    Parameters
    ----------
    model : any callable / nn.Module mapping (B, rep_in.size) -> (B, rep_out.size) (or (B, ...) with as many entries).
    group : Group or spec ("S(5)", "D(6)", "SO(3)").
    rep_in, rep_out : Reps or spec strings ("5V", "V0").
    n_samples : Monte-Carlo samples (default: exact for finite groups, DEFAULT_MC_SAMPLES otherwise).
    seed : seed of the sampler.
    chunk_rows : maximal rows (elements x batch) per model call (default: the batch size, at least 256, so that
        every call is the size of an ordinary forward pass -- very large calls are slower per row on CPU; 0: all
        elements in one call).

    Group actions are applied in float64; the model sees its own dtype; the output is cast back to it.

    Example
    -------
    >>> import torch, softsym
    >>> from softsym.wrappers import GroupAverage
    >>> f = GroupAverage(torch.nn.Linear(5, 1).double(), "S(5)", "V", "V0")
    >>> x = torch.randn(4, 5, dtype=torch.float64)
    >>> bool(torch.allclose(f(x), f(x.flip(1))))
    True
    """

    def __init__(self, model: Callable, group, rep_in, rep_out, n_samples: Optional[int] = None, *,
                 seed: Optional[int] = None, chunk_rows: Optional[int] = None) -> None:
        super().__init__()
        self.model = model
        self.group = parse_group(group)
        self.rep_in = _make_rep(rep_in, self.group)
        self.rep_out = _make_rep(rep_out, self.group)
        if self.group.is_complex:
            raise ConfigError(f"{self.group.name} is complex; GroupAverage supports real groups only")
        seed = check_seed(seed)
        if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer))
                                      or n_samples < 1):
            raise ConfigError(f"n_samples must be a positive integer or None, got {n_samples!r}")
        if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer))
                                       or chunk_rows < 0):
            raise ConfigError(f"chunk_rows must be None, 0 (one call) or a positive integer, got {chunk_rows!r}")
        self.chunk_rows = chunk_rows
        self.seed = seed
        # seed None: a stream seeded from torch's global generator (torch.manual_seed makes runs reproducible)
        stream = seed if seed is not None else int(torch.randint(0, 2**62, (1,), device="cpu"))
        self.rng = np.random.default_rng(stream)
        self._finite = finite_elements(self.group)
        order = None if self._finite is None else len(self._finite)
        self.exact = order is not None and (n_samples is None or n_samples >= order)
        self._host = None  # CPU float64 copies of the fixed elements (the buffers may move to any device, even meta)
        if self.exact:
            els = torch.from_numpy(np.ascontiguousarray(self._finite))
            self.n_samples = int(order)
            self.register_buffer("elements", els, persistent=False)
            self.register_buffer("inverses", torch.linalg.inv(els), persistent=False)
            self._host = (els, self.inverses)
        else:
            if not self.group.is_compact:
                raise ConfigError(
                    f"{self.group.name} is not compact: averaging over it is undefined (no finite Haar measure). "
                    "Use a soft penalty (softsym.soft.sampled.SampledPenalty) or an exactly equivariant model instead"
                )
            self.n_samples = int(n_samples or defaults.DEFAULT_MC_SAMPLES)
            if seed is not None:
                els = self._draw(self.n_samples)
                self.register_buffer("elements", els, persistent=False)
                self.register_buffer("inverses", torch.linalg.inv(els), persistent=False)
                self._host = (els, self.inverses)
            else:
                self.elements = None
                self.inverses = None

    def _draw(self, n: int) -> torch.Tensor:
        if self._finite is not None:  # uniform over the distinct elements
            return torch.from_numpy(np.ascontiguousarray(self._finite[self.rng.integers(0, len(self._finite), n)]))
        return self.group.sample(n, generator=self.rng).to(torch.float64)

    def extra_repr(self) -> str:
        """Group, reps, exact or Monte-Carlo averaging and the number of elements, for ``repr(wrapper)``."""
        how = "exact" if self.exact else "Monte-Carlo"
        return f"group={self.group.name}, rep_in={self.rep_in!r}, rep_out={self.rep_out!r}, {how}, " \
               f"n_samples={self.n_samples}"

    #: Fixed elements get dense rho_in(g) / rho_out(g^-1) matrices when |G| * (n_in^2 + n_out^2) is at most this.
    DENSE_MAX_ENTRIES = 4_000_000

    def _dense(self, device):
        """Dense (S, n_in, n_in) rho_in(g) and (S, n_out, n_out) rho_out(g^-1) of the fixed elements, or None."""
        if self.elements is None:
            return None
        if not hasattr(self, "_dense_cache"):
            n_in, n_out = self.rep_in.size, self.rep_out.size
            if len(self.elements) * (n_in ** 2 + n_out ** 2) > self.DENSE_MAX_ENTRIES:
                self._dense_cache = None
            else:
                els, invs = self._host
                self._dense_cache = (torch.stack([self.rep_in.rho(g).dense() for g in els]),
                                     torch.stack([self.rep_out.rho(h).dense() for h in invs]))
        if self._dense_cache is None:
            return None
        return tuple(m.to(device) for m in self._dense_cache)

    def _apply(self, fn, *args, **kwargs):
        """Move the fixed elements with the module (``.to(device)``) but keep them float64: ``.float()`` / ``.half()``
        convert the model only, since the group actions are always applied in float64."""
        keep = {k: getattr(self, k) for k in ("elements", "inverses") if getattr(self, k, None) is not None}
        super()._apply(fn, *args, **kwargs)
        for i, (k, v) in enumerate(keep.items()):
            if v.device.type == "meta" and self._host is not None:  # e.g. .to_empty() after .to("meta"): no values
                v = self._host[i]
            setattr(self, k, v.to(device=getattr(self, k).device))
        return self

    def _current_elements(self, device):
        fresh = not self.exact and (self.training or self.elements is None)
        if fresh:
            els = self._draw(self.n_samples).to(device)
            return els, torch.linalg.inv(els)
        return self.elements.to(device), self.inverses.to(device)

    def _check_input(self, x) -> None:
        """DataError unless x is a finite real tensor (batch, rep_in.size)."""
        n_in = self.rep_in.size
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != n_in:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"GroupAverage: inputs must be (batch, {n_in}) for rep_in {self.rep_in!r}, got {shape}")
        require_real_finite(x, "GroupAverage")

    def _model_output(self, y, rows: int) -> torch.Tensor:
        """The model's output for ``rows`` inputs, unchanged, after checking it is a real tensor (rows, ...) with
        rep_out.size entries per row (ModelError otherwise)."""
        try:
            _check_output(y, rows, self.rep_out.size, self.rep_out, check_finite=False)
        except ModelError as exc:
            raise ModelError(f"GroupAverage: {exc} (the wrapped model is called on stacks of transformed copies of "
                             f"the inputs, {rows} rows here: it must map (rows, {self.rep_in.size}) to (rows, "
                             f"{self.rep_out.size}) for any number of rows)") from None
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, rep_in.size) -> averaged output with the model's output shape (B, ...)."""
        n_in, n_out = self.rep_in.size, self.rep_out.size
        self._check_input(x)
        mdtype, _ = model_dtype_device(self.model, x)
        b = x.shape[0]
        if b == 0:  # the average over an empty batch is empty: the model's own output for it
            return self._model_output(call_model(self.model, x.to(mdtype), "GroupAverage"), 0)
        x64 = x.to(torch.float64)
        els, invs = self._current_elements(x.device)
        fixed = self.exact or not (self.training or self.elements is None)
        dense = self._dense(x.device) if fixed else None
        rows = self.chunk_rows if self.chunk_rows is not None else max(b, 256)
        per = len(els) if rows == 0 else max(1, rows // max(b, 1))
        total, out_shape, out_dtype = None, None, None
        for start in range(0, len(els), per):
            g, gi = els[start:start + per], invs[start:start + per]
            s = g.shape[0]
            if dense is not None:
                xg = torch.einsum("sij,bj->sbi", dense[0][start:start + s], x64).reshape(s * b, n_in).to(mdtype)
            else:
                xg = act_each(self.rep_in, g, x64).to(mdtype)
            y = self._model_output(call_model(self.model, xg, "GroupAverage"), s * b)
            if out_shape is None:
                out_shape, out_dtype = tuple(y.shape[1:]), y.dtype
            y = y.reshape(s * b, n_out).to(torch.float64)
            if dense is not None:
                back = torch.einsum("sij,sbj->bi", dense[1][start:start + s], y.reshape(s, b, n_out))
            elif b < 256:
                back = self.rep_out.rho(gi.repeat_interleave(b, dim=0)).apply(y).reshape(s, b, n_out).sum(0)
            else:
                back = torch.stack([self.rep_out.rho(h).apply(yk) for h, yk in zip(gi, y.reshape(s, b, n_out))]).sum(0)
            total = back if total is None else total + back
        out = total / len(els)
        return out.reshape(b, *out_shape).to(out_dtype if out_dtype.is_floating_point else torch.float64)
