"""Lie-derivative penalty (Gruver et al., ICLR 2023) for any differentiable model.

R_j = mean_A mean_x ||L_A f(x)||^2 / n_out,  L_A f(x) = J_f(x) drho_in(A) x - drho_out(A) f(x)

over the Lie-algebra generators A of candidate j (normalised to unit spectral norm), computed with forward-mode
AD (``torch.func.jvp``), which composes with ordinary backpropagation to the parameters.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import torch

from ..errors import ConfigError, ModelError, SoftsymError
from ..metrics import _check_output, model_dtype_device
from .sampled import (bind_reps, check_inputs, check_normalize, check_residuals, penalty_seed, pick_reps,
                      residual_scale, same_randomness)
from .symmetry import SoftSymmetry, as_symmetry

__all__ = ["LiePenalty"]


class LiePenalty:
    """Infinitesimal equivariance penalty, one residual per candidate group.

    Parameters
    ----------
    symmetry : SoftSymmetry (or the candidate groups: a list of specs); every candidate needs a Lie algebra
        (finite groups: use SampledPenalty).
    rep_ins, rep_outs : a rep spec bound to every candidate, or one rep per candidate (also ``rep_in=`` /
        ``rep_out=``).
    n_generators : use a random subset of this many generators per call (default: all); the subset is drawn with
        ``seed`` (None: from torch's global generator) and changes every call, an unbiased estimate of the mean.
    method : "auto" (default: jvp, and reverse mode twice where the model has no forward-mode rule, e.g.
        PyTorch's fused TransformerEncoder in eval mode or BatchNorm updating its statistics in training),
        "jvp" (torch.func.jvp only) or "vjp" (reverse mode twice; only correct if custom autograd Functions in the
        model have a differentiable backward -- softsym's own refuse double backward with a clear error).
    normalize : "none" (default: mean over the outputs, the units of an MSE loss) or "output" (relative to the
        outputs' detached mean square; scale-free, but it can drive small models to constant outputs).

    Only the identity component is penalised: discrete symmetries (e.g. reflections of O(3)) are not; combine
    with SampledPenalty for those. Residuals (J,) are returned in the model output's dtype.
    """

    def __init__(self, symmetry: SoftSymmetry, rep_ins=None, rep_outs=None, *, n_generators: Optional[int] = None,
                 seed: Optional[int] = None, method: str = "auto", normalize: str = "none", rep_in=None,
                 rep_out=None) -> None:
        symmetry = as_symmetry(symmetry, "LiePenalty")
        rep_ins = pick_reps(rep_ins, rep_in, "rep_in", "LiePenalty")
        rep_outs = pick_reps(rep_outs, rep_out, "rep_out", "LiePenalty")
        self.symmetry = symmetry
        self.rep_ins = bind_reps(symmetry, rep_ins, "rep_ins")
        self.rep_outs = bind_reps(symmetry, rep_outs, "rep_outs")
        self.generators = []
        for g in symmetry.groups:
            if g.is_complex:
                raise ConfigError(f"{g.name} is complex; LiePenalty supports real groups only")
            a = g.lie_algebra.to(torch.float64)
            if len(a) == 0:
                raise ConfigError(
                    f"candidate {g.name} has no Lie algebra (a finite group), so a Lie-derivative penalty is zero; "
                    "use softsym.soft.sampled.SampledPenalty for it"
                )
            self.generators.append(a / torch.linalg.matrix_norm(a, ord=2)[:, None, None])
        if n_generators is not None and (isinstance(n_generators, bool) or not isinstance(n_generators, (int, np.integer))
                                         or n_generators < 1):
            raise ConfigError(f"n_generators must be a positive integer or None, got {n_generators!r}")
        self.n_generators = None if n_generators is None else int(n_generators)
        if method not in ("auto", "jvp", "vjp"):
            raise ConfigError(f"method must be 'auto', 'jvp' or 'vjp', got {method!r}")
        self.method = method
        self._jvp_failed: Dict[bool, str] = {}  # method="auto": training flag -> why jvp failed in that mode
        self.normalize = check_normalize(normalize, "LiePenalty")
        self._torch_gen = torch.Generator().manual_seed(penalty_seed(seed))

    def rng_state(self) -> dict:
        """The generator-subset sampler's state (JSON-able), so that a resumed run draws the same subsets."""
        return {"torch": self._torch_gen.get_state().tolist()}

    def set_rng_state(self, state: dict) -> None:
        self._torch_gen.set_state(torch.tensor(state["torch"], dtype=torch.uint8))

    @property
    def n_in(self) -> int:
        return self.rep_ins[0].size

    @property
    def n_out(self) -> int:
        return self.rep_outs[0].size

    def residuals(self, model: Callable, x: torch.Tensor) -> torch.Tensor:
        """Residuals (J,), differentiable w.r.t. the model's parameters. x: (B, n_in)."""
        check_inputs(x, self.n_in, "LiePenalty")
        mdtype, _ = model_dtype_device(model, x)
        b = x.shape[0]
        x64 = x.detach().to(torch.float64)
        res, out_dtype = [], None
        for gens, rin, rout in zip(self.generators, self.rep_ins, self.rep_outs):
            if self.n_generators is not None and self.n_generators < len(gens):
                idx = torch.randperm(len(gens), generator=self._torch_gen)[: self.n_generators]
                gens = gens[idx]
            k = len(gens)
            gb = gens.to(x.device).repeat_interleave(b, dim=0)
            xs = x64.repeat(k, 1)
            tangent = rin.drho(gb).apply(xs)
            with same_randomness(model):  # as the sampled penalty: no trace in the RNG or BatchNorm statistics
                y, dy = self._derivative(model, xs.to(mdtype), tangent.to(mdtype))
            _check_output(y, k * b, self.n_out, rout, check_finite=False)
            out_dtype = y.dtype if y.is_floating_point() else torch.float64
            y = y.reshape(k * b, self.n_out).to(torch.float64)
            dy = _check_output(dy, k * b, self.n_out, rout, check_finite=False).to(torch.float64)
            lie = dy - rout.drho(gb).apply(y)
            norm = residual_scale(self.normalize, y[:b])
            res.append(lie.pow(2).sum(1).mean() / norm)
        return check_residuals(torch.stack(res), "LiePenalty").to(out_dtype)

    def _derivative(self, model: Callable, x: torch.Tensor, t: torch.Tensor):
        """(model(x), J t), differentiable w.r.t. the parameters."""
        from torch.func import jvp

        mode = bool(getattr(model, "training", False))
        if self.method == "jvp" or (self.method == "auto" and mode not in self._jvp_failed):
            try:
                return jvp(model, (x,), (t,))
            except SoftsymError:  # the model's own clear error (e.g. a softsym wrapper refusing its inputs)
                raise
            except Exception as exc:
                why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                if self.method == "jvp":
                    raise ModelError(f"torch.func.jvp of the model failed ({why}); use method='auto' or 'vjp' (if "
                                     "its backward is differentiable) or SampledPenalty") from exc
                self._jvp_failed[mode] = why  # auto: reverse mode from now on, for models in this mode
        try:
            return self._derivative_vjp(model, x, t)
        except ModelError as exc:
            if self.method == "auto":
                raise ModelError(f"the Lie penalty needs the model's Jacobian-vector products: torch.func.jvp failed "
                                 f"({self._jvp_failed[mode]}) and so did reverse mode twice ({exc})") from None
            raise

    def _derivative_vjp(self, model: Callable, x: torch.Tensor, t: torch.Tensor):
        """(model(x), J t) by reverse mode twice (the double-vjp trick)."""
        keep_graph = torch.is_grad_enabled()  # under no_grad (e.g. validation) the residuals need no graph
        xr = x.detach().requires_grad_(True)
        try:
            with torch.enable_grad():
                y = model(xr)
                u = torch.zeros_like(y, requires_grad=True)
                (gx,) = torch.autograd.grad(y, xr, grad_outputs=u, create_graph=True)
                (dy,) = torch.autograd.grad(gx, u, grad_outputs=t, create_graph=keep_graph)
        except SoftsymError:
            raise
        except Exception as exc:
            raise ModelError(f"differentiating the model twice failed ({type(exc).__name__}: {exc}); the Lie "
                             "penalty needs forward-mode AD or double backward; use SampledPenalty") from exc
        return (y, dy) if keep_graph else (y.detach(), dy.detach())

    def __call__(self, model: Callable, x: torch.Tensor) -> torch.Tensor:
        """``symmetry.penalty(residuals(model, x))``."""
        return self.symmetry.penalty(self.residuals(model, x))
