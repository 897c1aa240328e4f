"""Projection penalty for every ``nn.Linear`` whose input / output reps the user declares.

residual_j = sum over declared layers of 1/2 ||W - P_j W||^2 + 1/2 ||b - P_j^b b||^2

where P_j projects onto the maps equivariant under candidate j (Hom(rep_in, rep_out)) and P_j^b onto the
invariant vectors of rep_out. Both are evaluated from the factored basis as 1/2 (||W||^2 - ||Q^T vec W||^2),
never forming a dense projector.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from ..reps.algebra import Hom
from ..reps.basis import Basis, equivariant_basis
from .sampled import bind_reps
from .symmetry import SoftSymmetry, as_symmetry

__all__ = ["LinearProjectionPenalty"]


def _off_subspace(v: torch.Tensor, basis: Basis) -> torch.Tensor:
    """1/2 ||v - P v||^2 = 1/2 (||v||^2 - ||Q^T v||^2), float64, clamped at 0 against round-off."""
    v64 = v.to(torch.float64).reshape(-1)
    if basis.dim == 0:
        return 0.5 * v64.pow(2).sum()
    c = basis.coefficients(v64)
    return (0.5 * (v64.pow(2).sum() - c.abs().pow(2).sum())).clamp_min(0.0)


class LinearProjectionPenalty:
    """Soft equivariance of declared ``nn.Linear`` layers by projection, one residual per candidate group.

    Parameters
    ----------
    model : the nn.Module holding the layers.
    symmetry : SoftSymmetry with the candidate groups.
    layers : {"dotted.layer.name": (rep_in, rep_out)}; reps are spec strings or unbound Reps (bound to every
        candidate) or lists with one rep per candidate. rep_in.size must equal in_features and rep_out.size
        out_features.

    The bases are solved (and cached on disk) at construction. Residuals (J,) are returned in the weights' dtype.

    Example
    -------
    >>> import torch, softsym
    >>> from softsym.soft import SoftSymmetry
    >>> from softsym.soft.linear_projection import LinearProjectionPenalty
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 9))
    >>> pen = LinearProjectionPenalty(net, SoftSymmetry(["O(3)", "SO(3)"]), {"0": ("V", "V**2")})
    >>> pen.residuals().shape
    torch.Size([2])
    """

    def __init__(self, model: nn.Module, symmetry: SoftSymmetry, layers: Optional[Mapping[str, Tuple]] = None, *,
                 reps: Optional[Mapping[str, Tuple]] = None) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"LinearProjectionPenalty needs an nn.Module, got {type(model).__name__}")
        symmetry = as_symmetry(symmetry, "LinearProjectionPenalty")
        for g in symmetry.groups:
            if g.is_complex:
                raise ConfigError(f"{g.name} is complex; LinearProjectionPenalty supports real groups only (a real "
                                  "nn.Linear has no complex equivariant subspace to project on)")
        if layers is not None and reps is not None:
            raise ConfigError("LinearProjectionPenalty got both layers= and reps= (the same argument under two names)")
        layers = reps if layers is None else layers
        if layers is None:
            raise ConfigError("LinearProjectionPenalty needs the declared layers {'layer name': (rep_in, rep_out)}")
        if not isinstance(layers, Mapping):
            raise ConfigError("LinearProjectionPenalty: layers must be a dict {'layer name': (rep_in, rep_out)}, got "
                              f"{type(layers).__name__}")
        if not layers:
            raise ConfigError("LinearProjectionPenalty needs at least one declared layer {'name': (rep_in, rep_out)}")
        self.model, self.symmetry = model, symmetry
        modules = dict(model.named_modules(remove_duplicate=False))  # a shared layer answers to every name
        linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        self.layers: List[Tuple[str, nn.Linear, List[Basis], List[Basis]]] = []
        for name, spec in layers.items():
            if not isinstance(name, str):
                raise ConfigError(f"layer names must be strings (the dotted names of model.named_modules(), e.g. "
                                  f"'0' or 'encoder.fc'), got {type(name).__name__} {name!r}; its nn.Linear layers "
                                  f"are: {', '.join(repr(n) for n in linears) or '(none)'}")
            if name not in modules:
                raise ConfigError(f"layer {name!r} not found in the model; its nn.Linear layers are: "
                                  f"{', '.join(linears) or '(none)'}")
            layer = modules[name]
            if not isinstance(layer, nn.Linear):
                raise ConfigError(f"layer {name!r} is a {type(layer).__name__}, not an nn.Linear; declare only "
                                  f"Linear layers: {', '.join(linears) or '(none)'}")
            if isinstance(layer, nn.modules.lazy.LazyModuleMixin) and layer.has_uninitialized_params():
                raise ConfigError(f"layer {name!r} is a lazy Linear whose in_features are not known yet; run one "
                                  "forward pass (or give in_features) before declaring its reps")
            if not (isinstance(spec, (tuple, list)) and len(spec) == 2):
                raise ConfigError(f"layer {name!r}: declare (rep_in, rep_out), got {spec!r}")
            rins = bind_reps(symmetry, spec[0], f"rep_in of layer {name!r}")
            routs = bind_reps(symmetry, spec[1], f"rep_out of layer {name!r}")
            if rins[0].size != layer.in_features or routs[0].size != layer.out_features:
                raise ConfigError(
                    f"layer {name!r} is Linear({layer.in_features} -> {layer.out_features}) but the declared reps "
                    f"have sizes {rins[0].size} ({spec[0]!s}) -> {routs[0].size} ({spec[1]!s}); declare reps whose "
                    "sizes match in_features / out_features"
                )
            w_bases = [equivariant_basis(Hom(ri, ro)) for ri, ro in zip(rins, routs)]
            b_bases = [equivariant_basis(ro) for ro in routs]
            self.layers.append((name, layer, w_bases, b_bases))

    def residuals(self) -> torch.Tensor:
        """Residuals (J,): sum over layers of the squared distance of (W, b) from the equivariant subspace / 2."""
        res = []
        dtype = None
        for j in range(len(self.symmetry)):
            total = 0.0
            for _, layer, w_bases, b_bases in self.layers:
                dtype = layer.weight.dtype
                total = total + _off_subspace(layer.weight, w_bases[j])
                if layer.bias is not None:
                    total = total + _off_subspace(layer.bias, b_bases[j])
            res.append(torch.as_tensor(total, dtype=torch.float64) if not torch.is_tensor(total) else total)
        return torch.stack(res).to(dtype)

    def per_layer(self) -> Dict[str, List[float]]:
        """{layer name: [residual for each candidate]} (detached floats), for reports."""
        out = {}
        for name, layer, w_bases, b_bases in self.layers:
            vals = []
            for wb, bb in zip(w_bases, b_bases):
                v = _off_subspace(layer.weight.detach(), wb)
                if layer.bias is not None:
                    v = v + _off_subspace(layer.bias.detach(), bb)
                vals.append(float(v))
            out[name] = vals
        return out

    def __call__(self) -> torch.Tensor:
        """``symmetry.penalty(residuals())``."""
        return self.symmetry.penalty(self.residuals())
