"""Frame averaging (Puny et al., ICLR 2022) and canonicalization of point clouds under O(d), SO(d), E(d), SE(d).

Inputs are point clouds ``x`` of shape (batch, n_points, C) whose channels are laid out as

    [ d position coordinates | scalar_channels invariant scalars | vector_channels vectors of d coordinates ]

The frame of a cloud comes from its centred covariance C = (X - t)^T (X - t) / n (t = centroid) with
eigenvectors V (columns, eigenvalues in descending order). For distinct eigenvalues the frame is
{V S : S = diag(+-1)} -- 2^d elements for O(d) / E(d), the 2^(d-1) with det(V S) = +1 for SO(d) / SE(d) -- and

    f_FA(x) = mean_{F in frame(x)} F . f(F^-1 . x)

is *exactly* equivariant (float64 round-off, ~1e-15): F^-1 . x expresses positions (centred for E(d)/SE(d))
and vectors in the frame's axes, scalars are unchanged, and F . y maps the output back according to its
declared type:

    "scalar"    invariant output of any shape
    "vector"    equivariant, last dimension d (one vector, or per-point vectors (B, n, d)): y -> y F^T
    "position"  like "vector", plus the centroid for E(d) / SE(d) (translation-equivariant positions)
    "tensor"    equivariant rank-2 tensor, last dimension d*d (row-major) or last two (d, d): Y -> F Y F^T

Degenerate clouds -- repeated covariance eigenvalues (consecutive gap <= ``degenerate_tol`` x the largest
eigenvalue): regular polygons, collinear, coincident or isotropic point sets -- have no unique eigenbasis in the
degenerate eigenspace E of dimension k. The fallback (announced by a ``DegenerateFrameWarning``) averages over
that eigenspace's stabiliser O(k), with ``degenerate_samples`` = m:

* k = 2: the dihedral grid D(m/2) (m/2 rotations by 2 pi j/(m/2) and their reflections). This is a quadrature
  rule: exact when the model's dependence on the in-plane angle has bandwidth < m/2 (e.g. collinear clouds in 3-d,
  where the model input does not depend on the angle and vector / tensor outputs are exact), and with an error
  decaying exponentially in m for analytic models otherwise.
* k = 3: the full icosahedral group I_h (120 elements, a spherical 5-design of O(3)) composed with
  max(1, m // 120) fixed Haar rotations: exact when the dependence on the rotation has degree <= 5 (e.g. coincident /
  duplicated points under E(3), where the model input is the same for every element and vector / tensor outputs
  are exact); otherwise a quadrature error (~1e-2 relative measured for a tanh MLP on the vertices of a cube).
* k >= 4: m Haar-random elements of O(k) from a fixed seed; a Monte-Carlo error ~ sqrt(2/m) times the spread of
  the per-frame outputs.

Sign ambiguities (including all sign choices of the non-degenerate axes) are always averaged exactly. Gradients flow
through the eigendecomposition for non-degenerate clouds; the frames of degenerate clouds are detached.
"""
from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import re
import sys
import warnings
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError, ModelError
from ..groups.base import Group
from ..groups.classical import O as _O
from ..groups.classical import SO as _SO
from ..groups.sampling import haar_orthogonal
from ..metrics import call_model, model_dtype_device, require_real_finite

__all__ = ["FrameAverage", "Canonicalize", "DegenerateFrameWarning", "OUTPUT_TYPES", "parse_frame_group"]

log = logging.getLogger(__name__)

OUTPUT_TYPES = ("scalar", "vector", "position", "tensor")

_SPEC = re.compile(r"^\s*(S?E|S?O)\s*\(\s*(\d+)\s*\)\s*$", re.IGNORECASE)


_SOFTSYM_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TORCH_MODULES = os.path.join("torch", "nn", "modules")


def _user_stacklevel() -> int:
    """stacklevel (for a warnings.warn in the caller of this function) of the first frame outside softsym and
    torch.nn.Module's call machinery, so that warnings name the user's line (not torch's module.py, whose one
    location would make the default filter show a warning once for all call sites)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename.startswith(_SOFTSYM_DIR)
                                 or _TORCH_MODULES in frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level


class DegenerateFrameWarning(UserWarning):
    """Raised (as a warning) when a point cloud's covariance has repeated eigenvalues; see the module docstring."""


def parse_frame_group(group: Union[str, Group]) -> Tuple[int, bool, bool, str]:
    """(d, special, translations, name) for "O(d)", "SO(d)", "E(d)", "SE(d)" or an O / SO Group object."""
    if isinstance(group, Group):
        if isinstance(group, _SO):
            return group.d, True, False, group.name
        if isinstance(group, _O):
            return group.d, False, False, group.name
        raise ConfigError(f"frame averaging supports O(d), SO(d), E(d), SE(d); got {group.name}. "
                          "For finite groups use GroupAverage, for S(n) SortCanonicalize")
    if not isinstance(group, str):
        raise ConfigError(f"group must be a spec such as 'O(3)' or 'E(3)', got {type(group).__name__}")
    m = _SPEC.match(group)
    if not m:
        raise ConfigError(f"frame averaging supports 'O(d)', 'SO(d)', 'E(d)', 'SE(d)'; got {group!r}. "
                          "For finite groups use GroupAverage, for S(n) SortCanonicalize")
    kind, d = m.group(1).upper(), int(m.group(2))
    if d < 1:
        raise ConfigError(f"dimension must be >= 1 in {group!r}")
    return d, kind.startswith("S"), kind.endswith("E"), f"{kind}({d})"


def _sign_vectors(d: int, special: bool) -> torch.Tensor:
    """All sign vectors (2^d, d), or those with product +1 (2^(d-1), d) when ``special``."""
    s = torch.tensor(list(itertools.product([1.0, -1.0], repeat=d)), dtype=torch.float64, device="cpu")
    if special:
        s = s[s.prod(dim=1) > 0]
    return s


def _dihedral_grid(m: int) -> torch.Tensor:
    """D(m/2) inside O(2): m/2 rotations and the same rotations times diag(1, -1); (2 * (m // 2), 2, 2)."""
    r = max(2, m // 2)
    th = torch.arange(r, dtype=torch.float64) * (2 * math.pi / r)
    c, s = torch.cos(th), torch.sin(th)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    refl = rot * torch.tensor([1.0, -1.0], dtype=torch.float64)
    return torch.cat([rot, refl])


def _axis_rotation(axis, angle: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


@functools.lru_cache(maxsize=1)
def _icosahedral() -> torch.Tensor:
    """The full icosahedral group I_h = I x {+-1} (120, 3, 3): a spherical 5-design of O(3)."""
    phi = (1 + math.sqrt(5)) / 2
    gens = [_axis_rotation((0, 1, phi), 2 * math.pi / 5), _axis_rotation((1, 1, 1), 2 * math.pi / 3)]
    found = {(np.round(np.eye(3), 9) + 0.0).tobytes(): np.eye(3)}
    frontier = [np.eye(3)]
    while frontier:
        nxt = []
        for g in frontier:
            for h in gens:
                e = h @ g
                key = (np.round(e, 9) + 0.0).tobytes()
                if key not in found:
                    found[key] = e
                    nxt.append(e)
        frontier = nxt
    rot = np.stack(list(found.values()))
    assert len(rot) == 60, len(rot)
    return torch.from_numpy(np.concatenate([rot, -rot]))


class _FrameBase(nn.Module):
    """Shared machinery: frames -> canonical inputs -> one batched model call -> outputs mapped back and averaged."""

    canonical: bool = False

    def __init__(self, model: Callable, group: Union[str, Group] = "O(3)", *, scalar_channels: int = 0,
                 vector_channels: int = 0, output: str = "scalar", degenerate_tol: float = 1e-5,
                 degenerate_samples: int = 64, seed: int = 0, canonical_tol: float = 1e-8, warn: bool = True,
                 chunk_rows: Optional[int] = None) -> None:
        super().__init__()
        self.model = model
        self.d, self.special, self.translations, self.group_name = parse_frame_group(group)
        for v, name in ((scalar_channels, "scalar_channels"), (vector_channels, "vector_channels"), (seed, "seed")):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {v!r}")
        for v, name, hi in ((degenerate_tol, "degenerate_tol", 1.0), (canonical_tol, "canonical_tol", math.inf)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not 0 <= v < hi:
                raise ConfigError(f"{name} must be a number in [0, {hi:g}), got {v!r}")
        scalar_channels, vector_channels = int(scalar_channels), int(vector_channels)
        if output not in OUTPUT_TYPES:
            raise ConfigError(f"output must be one of {', '.join(OUTPUT_TYPES)}; got {output!r}")
        if isinstance(degenerate_samples, bool) or not (isinstance(degenerate_samples, (int, np.integer))
                                                        and degenerate_samples >= 2):
            raise ConfigError(f"degenerate_samples must be an integer >= 2, got {degenerate_samples!r}")
        self.scalar_channels, self.vector_channels, self.output = scalar_channels, vector_channels, output
        self.degenerate_tol, self.degenerate_samples = float(degenerate_tol), int(degenerate_samples)
        self.canonical_tol, self.seed, self.warn = float(canonical_tol), int(seed), warn
        if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer))
                                       or chunk_rows < 0):
            raise ConfigError(f"chunk_rows must be None, 0 (one call) or a positive integer, got {chunk_rows!r}")
        self.chunk_rows = chunk_rows
        # a plain CPU tensor, not a buffer: fixed by (d, special), it must survive .to("meta") / to_empty()
        self._signs = _sign_vectors(self.d, self.special)
        #: number of degenerate clouds met in the last forward call (for diagnostics)
        self.last_degenerate = 0
        self.last_frame_sizes: Optional[torch.Tensor] = None

    @property
    def channels(self) -> int:
        """Input channels per point: d position coordinates, the scalars, then d per vector channel."""
        return self.d * (1 + self.vector_channels) + self.scalar_channels

    @property
    def signs(self) -> torch.Tensor:
        """The sign vectors of a generic cloud's frame, (2^d, d) or (2^(d-1), d) for special groups (float64)."""
        return self._signs

    @property
    def frame_size(self) -> int:
        """Frame elements per generic (non-degenerate) cloud."""
        return 1 if self.canonical else len(self.signs)

    def extra_repr(self) -> str:
        """Group, channel layout, output type and frame size, for ``repr(wrapper)``."""
        return (f"group={self.group_name}, scalar_channels={self.scalar_channels}, "
                f"vector_channels={self.vector_channels}, output={self.output!r}, frame_size={self.frame_size}")

    # ------------------------------------------------------------------ frames
    def _eig(self, pos: torch.Tensor):
        """Centroid (B, d), eigenvalues (B, d) descending, eigenvectors V (B, d, d) with det V = +1."""
        t = pos.mean(dim=1)
        xc = pos - t[:, None, :]
        cov = xc.transpose(1, 2) @ xc / pos.shape[1]
        w, v = torch.linalg.eigh(cov)
        if cov.requires_grad:
            # eigh's backward divides by eigenvalue gaps: a degenerate cloud (whose frames are detached anyway) would
            # put NaN into the gradient of the whole batch, so its covariance enters the decomposition detached
            degenerate = ~self._generic(w.detach().flip(-1))
            if bool(degenerate.any()):
                w, v = torch.linalg.eigh(torch.where(degenerate[:, None, None], cov.detach(), cov))
        w, v = w.flip(-1), v.flip(-1)
        det = torch.linalg.det(v.detach())
        fix = torch.ones_like(w)
        fix[:, -1] = torch.where(det < 0, -1.0, 1.0)
        return t, w, v * fix[:, None, :], xc

    def _generic(self, w: torch.Tensor) -> torch.Tensor:
        """(B,) True for clouds whose (descending) eigenvalues w (B, d) have no gap <= degenerate_tol * lambda_max."""
        w = w.detach()
        gaps = w[:, :-1] - w[:, 1:]
        return ~(gaps <= self.degenerate_tol * w[:, :1].clamp_min(0.0)).any(dim=1)

    def _clusters(self, w: torch.Tensor) -> List[List[int]]:
        """Groups of (descending) eigenvalue indices whose consecutive gaps are <= degenerate_tol * lambda_max."""
        w = w.detach().cpu().tolist()  # tolist, not numpy(): works on torch.func (jvp/grad) wrapped tensors
        scale = max(float(w[0]), 0.0)
        groups, cur = [], [0]
        for i in range(1, len(w)):
            if w[i - 1] - w[i] <= self.degenerate_tol * scale:
                cur.append(i)
            else:
                groups.append(cur)
                cur = [i]
        groups.append(cur)
        return groups

    def _degenerate_frames(self, v: torch.Tensor, clusters: List[List[int]]) -> torch.Tensor:
        """Frames (K, d, d) of one degenerate cloud: V times block-diagonal elements of the clusters' O(k)."""
        d = self.d
        rng = np.random.default_rng([self.seed, 1729])
        factors = []  # per cluster: (n_c, k, k) candidate blocks
        for c in clusters:
            k = len(c)
            if k == 1:
                factors.append(torch.tensor([[[1.0]], [[-1.0]]], dtype=torch.float64))
            elif k == 2:
                factors.append(_dihedral_grid(self.degenerate_samples))
            elif k == 3:  # I_h composed with max(1, m // 120) Haar rotations
                ico = _icosahedral()
                offsets = torch.from_numpy(haar_orthogonal(max(1, self.degenerate_samples // 120), 3, rng))
                factors.append((offsets[:, None] @ ico[None]).reshape(-1, 3, 3))
            else:
                factors.append(torch.from_numpy(haar_orthogonal(self.degenerate_samples, k, rng)))
        blocks = []
        for combo in itertools.product(*[range(len(f)) for f in factors]):
            m = torch.zeros(d, d, dtype=torch.float64)
            for c, f, i in zip(clusters, factors, combo):
                m[np.ix_(c, c)] = f[i]
            blocks.append(m)
        mats = torch.stack(blocks)
        if self.special:  # det V = +1, keep det(M) = +1 (uniform on the admissible coset of each block)
            mats = mats[torch.linalg.det(mats) > 0]
        return v.detach()[None] @ mats.to(v.device)

    def _canonical_signs(self, coords: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Admissible sign vectors from the third-moment rule (ties keep both signs).

        coords: (B, n, d) centred coordinates in the eigenbasis. Returns (signs (M, d), counts (B,)).
        """
        d, b = self.d, coords.shape[0]
        m3 = coords.pow(3).sum(dim=1)  # (B, d)
        # relative to the whole cloud's scale sum_n |x_n - t|^3: an axis with (numerically) zero spread, e.g. the
        # normal of a planar cloud, has round-off coordinates whose third moment has a random sign -- a tie
        ref = coords.norm(dim=2).pow(3).sum(dim=1, keepdim=True)
        tie = m3.abs() <= self.canonical_tol * ref.clamp_min(torch.finfo(torch.float64).tiny)
        sgn = torch.where(m3 >= 0, 1.0, -1.0).to(torch.float64)
        free = d - 1 if self.special else d
        if self.special:
            tie[:, -1] = False
            sgn[:, -1] = sgn[:, :-1].prod(dim=1) if d > 1 else 1.0
        tied = tie[:, :free].any(dim=1)
        if not bool(tied.any()):
            return sgn, torch.ones(b, dtype=torch.long, device=coords.device)
        rows, counts = [], []
        for i in range(b):
            if not bool(tied[i]):
                rows.append(sgn[i:i + 1])
                counts.append(1)
                continue
            options = [[1.0, -1.0] if bool(tie[i, j]) else [float(sgn[i, j])] for j in range(free)]
            vecs = []
            for combo in itertools.product(*options):
                v = list(combo)
                if self.special:
                    v.append(float(np.prod(v)) if v else 1.0)
                vecs.append(v)
            rows.append(torch.tensor(vecs, dtype=torch.float64, device=coords.device))
            counts.append(len(vecs))
        return torch.cat(rows), torch.tensor(counts, device=coords.device)

    def _plan(self, pos: torch.Tensor) -> dict:
        """Frames of a batch of clouds (B, n, d), in two groups.

        regular: clouds whose frame is {V diag(s) : s in a fixed-size set of sign vectors} (indices ``reg``,
        sign vectors ``reg_signs`` (R, K, d)); irregular: clouds with another frame (degenerate spectra, tied third
        moments of Canonicalize), given as explicit matrices ``irr_frames`` (M, d, d) with their cloud ``irr_owner``.
        """
        b, device = pos.shape[0], pos.device
        t, w, v, xc = self._eig(pos)
        generic = self._generic(w)
        idx = torch.nonzero(generic).flatten()
        irr_frames, irr_owner, deg_dims = [], [], []
        reg, reg_signs = idx, self._signs.to(device)[None].expand(len(idx), -1, -1)
        if self.canonical and len(idx):
            coords = torch.einsum("bnj,bjk->bnk", xc[idx].detach(), v[idx].detach())
            sg, counts = self._canonical_signs(coords)  # (M, d), (n_generic,)
            offsets = torch.cumsum(counts, 0) - counts
            single = counts == 1
            reg, reg_signs = idx[single], sg[offsets[single]][:, None, :]
            for j in torch.nonzero(~single).flatten().tolist():  # tied third moments: keep both signs
                rows = sg[int(offsets[j]):int(offsets[j]) + int(counts[j])]
                irr_frames.append(v[idx[j]].detach()[None] * rows[:, None, :])
                irr_owner.append(torch.full((len(rows),), int(idx[j]), dtype=torch.long, device=device))
        for i in torch.nonzero(~generic).flatten().tolist():
            cl = self._clusters(w[i])
            f = self._degenerate_frames(v[i], cl)
            irr_frames.append(f)
            irr_owner.append(torch.full((len(f),), i, dtype=torch.long, device=device))
            deg_dims.append([len(c) for c in cl if len(c) > 1])
        n_deg = len(deg_dims)
        if n_deg and self.warn:
            dims = sorted({k for m in deg_dims for k in m})
            warnings.warn(
                f"{type(self).__name__}: {n_deg} of {b} point clouds have repeated covariance eigenvalues "
                f"(degenerate eigenspaces of dimension {dims}: regular polygons, collinear, coincident or "
                "isotropic points). Averaging over the degenerate eigenspace (dihedral grid of "
                f"{self.degenerate_samples} elements in dimension 2, icosahedral group in 3, Haar Monte-Carlo "
                "above); equivariance is approximate for these clouds, see the FrameAverage docstring",
                DegenerateFrameWarning, stacklevel=_user_stacklevel(),
            )
        empty = torch.zeros(0, self.d, self.d, dtype=torch.float64, device=device)
        return {
            "t": t, "v": v, "reg": reg, "reg_signs": reg_signs.to(torch.float64),
            "irr_frames": torch.cat(irr_frames) if irr_frames else empty,
            "irr_owner": torch.cat(irr_owner) if irr_owner else torch.zeros(0, dtype=torch.long, device=device),
            "n_degenerate": n_deg,
        }

    def frames(self, pos: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """All frame elements of a batch of clouds (B, n, d), for inspection.

        Returns (frames (M, d, d) float64 with the frame axes as columns, owner (M,) cloud of each frame,
        centroids (B, d), number of degenerate clouds).
        """
        plan = self._plan(pos.to(torch.float64))
        reg, signs = plan["reg"], plan["reg_signs"]
        k = signs.shape[1]
        reg_frames = (plan["v"][reg][:, None] * signs[:, :, None, :]).reshape(-1, self.d, self.d)
        frames = torch.cat([reg_frames, plan["irr_frames"]])
        owner = torch.cat([reg.repeat_interleave(k), plan["irr_owner"]])
        return frames, owner, plan["t"], plan["n_degenerate"]

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[2] != self.channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(
                f"{type(self).__name__}: inputs must be (batch, n_points, {self.channels}) = {self.d} position "
                f"coordinates + {self.scalar_channels} scalars + {self.vector_channels} x {self.d} vector "
                f"coordinates per point; got {shape}"
            )
        if x.shape[1] == 0:
            raise DataError(f"{type(self).__name__}: point clouds need at least one point")
        if x.device.type == "meta":
            raise DataError(f"{type(self).__name__}: the inputs are on the meta device (shapes only); PCA frames are "
                            "computed from the point values, so pass the clouds on a real device")
        require_real_finite(x, type(self).__name__, "; the PCA frame of such a cloud is undefined")

    def _canonical_inputs(self, x64: torch.Tensor, t: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
        """Clouds x64 (M, n, C) expressed in frames ``mats`` (M, d, d) (positions centred for E(d) / SE(d))."""
        d, s, nv = self.d, self.scalar_channels, self.vector_channels
        m, npts = x64.shape[:2]
        pos = x64[..., :d] - t[:, None, :] if self.translations else x64[..., :d]
        parts = [pos @ mats]
        if s:
            parts.append(x64[..., d:d + s])
        if nv:
            vec = x64[..., d + s:].reshape(m, npts, nv, d)
            parts.append(torch.einsum("mnvj,mjk->mnvk", vec, mats).reshape(m, npts, nv * d))
        return torch.cat(parts, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, n_points, channels) -> averaged output of the model with its output shape (B, ...)."""
        self._check_input(x)
        d = self.d
        mdtype, _ = model_dtype_device(self.model, x)
        b, npts = x.shape[:2]
        x64 = x.to(torch.float64)
        plan = self._plan(x64[..., :d])
        t, v, reg, signs = plan["t"], plan["v"], plan["reg"], plan["reg_signs"]
        irr_frames, irr_owner = plan["irr_frames"], plan["irr_owner"]
        self.last_degenerate = plan["n_degenerate"]
        r, k = len(reg), signs.shape[1]
        # regular clouds: rotate once into the eigenbasis, then flip signs by broadcasting (no per-frame matmuls)
        base = self._canonical_inputs(x64[reg], t[reg], v[reg])  # (R, n, C)
        flip = torch.ones(r, k, 1, self.channels, dtype=torch.float64, device=x.device)
        flip[..., :d] = signs[:, :, None, :]
        if self.vector_channels:
            st = d + self.scalar_channels
            flip[..., st:] = signs[:, :, None, :].repeat(1, 1, 1, self.vector_channels)
        canon_reg = (base[:, None] * flip).reshape(r * k, npts, self.channels)
        if len(irr_owner):
            canon_irr = self._canonical_inputs(x64[irr_owner], t[irr_owner], irr_frames)
            canon = torch.cat([canon_reg, canon_irr])
        else:  # the common case: no degenerate cloud, no copy
            canon = canon_reg
        y = self._call_model(canon.to(mdtype), b)
        if not isinstance(y, torch.Tensor):
            raise ModelError(f"{type(self).__name__}: the model must return a tensor (torch.Tensor, batch x ...), got "
                             f"{type(y).__name__}" + (f" of shape {tuple(y.shape)}" if hasattr(y, "shape") else "")
                             + " (convert numpy outputs with torch.as_tensor inside the model)")
        if y.ndim == 0 or y.shape[0] != r * k + len(irr_owner):
            raise ModelError(f"{type(self).__name__}: the model must return a tensor (batch, ...), got shape "
                             f"{tuple(y.shape)} for a batch of {r * k + len(irr_owner)}")
        out_dtype = y.dtype if y.is_floating_point() else torch.float64
        y = y.to(torch.float64)
        shape = tuple(y.shape[1:])
        y_reg = self._average_signed(y[:r * k].reshape(r, k, *shape), signs)  # in the eigenbasis, (R, ...)
        y_reg = self._map_back(y_reg, v[reg])
        y_irr = self._map_back(y[r * k:], irr_frames) if len(irr_owner) else None
        if self.output == "position" and self.translations:
            y_reg = y_reg + t[reg].reshape(r, *([1] * (y_reg.ndim - 2)), d)
        if y_irr is None and r == b:  # every cloud regular: y_reg is already in batch order
            self.last_frame_sizes = torch.full((b,), k, dtype=torch.long, device=x.device)
            return y_reg.to(out_dtype)
        counts = torch.bincount(irr_owner, minlength=b).to(torch.float64)
        out = torch.zeros((b,) + shape, dtype=torch.float64, device=x.device)
        if y_irr is not None:
            if self.output == "position" and self.translations:
                y_irr = y_irr + t[irr_owner].reshape(len(irr_owner), *([1] * (y_irr.ndim - 2)), d)
            out = out.index_add(0, irr_owner, y_irr) / counts.clamp_min(1.0).reshape(b, *([1] * len(shape)))
        out = out.index_copy(0, reg, y_reg)
        sizes = counts.long()
        sizes[reg] = k
        self.last_frame_sizes = sizes
        return out.to(out_dtype)

    def _call_model(self, canon: torch.Tensor, batch: int):
        """The model on all canonical clouds, in calls of at most ``chunk_rows`` rows (default: the input batch size,
        at least 256, so each call has the size of an ordinary forward pass; 0: a single call)."""
        rows = self.chunk_rows if self.chunk_rows is not None else max(batch, 256)
        if rows == 0 or canon.shape[0] <= rows:
            return call_model(self.model, canon, type(self).__name__)
        who = type(self).__name__
        outs = [call_model(self.model, canon[i:i + rows], who) for i in range(0, canon.shape[0], rows)]
        if not all(isinstance(o, torch.Tensor) for o in outs):
            return outs[0]  # reported by the caller's check
        return torch.cat(outs)

    def _average_signed(self, y: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
        """mean_k S_k . y_k in the eigenbasis: y (R, K, ...) and signs (R, K, d) -> (R, ...)."""
        if self.output == "scalar":
            return y.mean(1)
        d = self.d
        r, k = y.shape[:2]
        if self.output in ("vector", "position"):
            if y.shape[-1] != d:
                raise ModelError(f"output {self.output!r} needs a last dimension of {d}; the model returned shape "
                                 f"{(r * k,) + tuple(y.shape[2:])} for {r * k} canonical clouds")
            s = signs.reshape(r, k, *([1] * (y.ndim - 3)), d)
            return (y * s).mean(1)
        if y.ndim >= 4 and y.shape[-2:] == (d, d):
            mat = y
        elif y.shape[-1] == d * d:
            mat = y.reshape(*y.shape[:-1], d, d)
        else:
            raise ModelError(f"output 'tensor' needs trailing dims ({d}, {d}) or a last dim of {d * d}; the model "
                             f"returned shape {(r * k,) + tuple(y.shape[2:])} for {r * k} canonical clouds")
        ss = (signs[:, :, :, None] * signs[:, :, None, :]).reshape(r, k, *([1] * (mat.ndim - 4)), d, d)
        return (mat * ss).mean(1).reshape(r, *y.shape[2:])

    def _map_back(self, y: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        d, m = self.d, y.shape[0]
        if self.output == "scalar" or m == 0:
            return y
        if self.output in ("vector", "position"):
            if y.shape[-1] != d:
                raise ModelError(f"output {self.output!r} needs a last dimension of {d}; the model returned shape "
                                 f"{tuple(y.shape)}")
            flat = y.reshape(m, -1, d)
            return torch.einsum("mij,mkj->mki", frames, flat).reshape(y.shape)
        # tensor
        if y.ndim >= 3 and y.shape[-2:] == (d, d):
            mat, shape = y.reshape(m, -1, d, d), y.shape
        elif y.shape[-1] == d * d:
            mat, shape = y.reshape(m, -1, d, d), y.shape
        else:
            raise ModelError(f"output 'tensor' needs trailing dims ({d}, {d}) or a last dim of {d * d}; "
                             f"the model returned shape {tuple(y.shape)}")
        out = frames[:, None] @ mat @ frames.transpose(-1, -2)[:, None]
        return out.reshape(shape)


class FrameAverage(_FrameBase):
    """Frame averaging of any point-cloud model under O(d), SO(d), E(d) or SE(d) (Puny et al., ICLR 2022).

    Parameters
    ----------
    model : callable taking (M, n_points, channels) canonicalised clouds in the same channel layout as the input
        and returning (M, ...) outputs of the declared type.
    group : "O(d)", "SO(d)", "E(d)" (O(d) plus translations, handled by centring) or "SE(d)"; or an O / SO group.
    scalar_channels : invariant per-point features after the d position coordinates (e.g. masses).
    vector_channels : per-point vectors (d coordinates each) after the scalars (e.g. velocities).
    output : "scalar", "vector", "position" or "tensor" (see the module docstring).
    degenerate_tol : relative eigenvalue gap under which eigenvalues count as repeated (default 1e-5).
    degenerate_samples : elements m used in a degenerate eigenspace (default 64).
    seed : seed of the Haar samples in degenerate eigenspaces of dimension >= 4 (fixed, so eval is deterministic).
    chunk_rows : rows per model call (default: the batch size, at least 256, so every call is the size of an
        ordinary forward pass -- large calls are slower per row on CPU; 0: one call for all frames, e.g. on GPU).

    Cost: 2^d (O / E) or 2^(d-1) (SO / SE) model rows per generic cloud, in a single batched call.
    Exactness: float64 round-off on clouds with distinct covariance eigenvalues; degenerate clouds: see the
    module docstring (dihedral quadrature for 2-d eigenspaces, icosahedral for 3-d, Monte-Carlo ~ sqrt(2/m)
    above).

    Example
    -------
    >>> import torch
    >>> from softsym.wrappers import FrameAverage
    >>> net = lambda pts: pts.pow(3).sum(dim=1)  # (M, n, 3) -> (M, 3), not equivariant
    >>> fa = FrameAverage(net, "O(3)", output="vector")
    >>> fa(torch.randn(2, 6, 3, dtype=torch.float64)).shape
    torch.Size([2, 3])
    """

    canonical = False


class Canonicalize(_FrameBase):
    """Canonicalization by a single frame element: the PCA frame with signs fixed by the third moment.

    The sign of axis i is the sign of sum_n <x_n - t, v_i>^3 (for SO(d) / SE(d) the last axis' sign is fixed
    by det = +1 instead). An axis whose third moment vanishes (|m3| <= canonical_tol * sum_n ||x_n - t||^3, e.g. a
    centrally symmetric cloud, or the normal of a planar cloud) keeps both signs, which are averaged -- exact. Repeated eigenvalues use the same fallback as
    FrameAverage. Cost: one model row per generic cloud. Exact (float64 round-off) on generic clouds; the
    canonical map is discontinuous where a third moment changes sign, so the wrapped model is too.

    Parameters are those of :class:`FrameAverage`, plus ``canonical_tol`` (default 1e-8).
    """

    canonical = True
