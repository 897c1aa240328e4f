"""The equivariant basis of a rep, stored factored per distinct tensor block, and its projector.

``equivariant_basis(rep)`` solves each distinct block once (cached on disk) and keeps, for every placement of
that block in the rep, only the index pattern. Dense Q (n x dim) is formed only on request and under a memory cap.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from .. import defaults
from ..errors import BasisTooLargeError, RepError, SolverError
from . import cache as _cache
from .base import DUAL, Component, Rep
from .block import BlockSolution, canonical_atoms

__all__ = ["Basis", "Projector", "equivariant_basis"]


def _atoms_label(atoms) -> str:
    if not atoms:
        return "V0"
    return "⊗".join("V*" if a == DUAL else "V" for a in atoms)


class Basis:
    """Orthonormal basis (float64; complex128 for complex groups) of the invariant subspace of a rep.

    Attributes
    ----------
    dim : int            number of basis vectors
    size : int           dimension n of the rep
    blocks : list[dict]  one entry per component: tensor block, placements, dim per placement, solver path
    spectrum : dict      per distinct block: smallest relative singular values, gap above the null space, residual

    ``project(v)`` applies P = Q Q^T to v (..., n) without forming Q; ``coefficients(v)`` = Q^T v;
    ``expand(c)`` = Q c; ``Q`` materialises the dense (n, dim) tensor under the memory cap.
    """

    def __init__(self, rep: Rep, parts: List[Tuple[Component, Tuple[int, ...], BlockSolution]], tol: float,
                 seconds: float = 0.0):
        self.rep, self.tol, self.seconds = rep, tol, seconds
        self._parts = parts
        self.size = rep.size
        self.is_complex = any(np.iscomplexobj(sol.Q) for _, _, sol in parts)
        self.dim = sum(comp.count * sol.dim for comp, _, sol in parts)
        self._torch_cache: Dict[tuple, list] = {}

    # ------------------------------------------------------------------ descriptions
    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the basis vectors: float64, or complex128 for a complex group."""
        return torch.complex128 if self.is_complex else torch.float64

    @property
    def blocks(self) -> List[dict]:
        """One row per tensor block: size, placements, dim per placement, total dim and solver path."""
        return [
            {"block": _atoms_label(atoms), "block_size": comp.block_size, "placements": comp.count,
             "dim_per_placement": sol.dim, "dim": comp.count * sol.dim, "path": sol.path}
            for comp, atoms, sol in self._parts
        ]

    @property
    def spectrum(self) -> Dict[str, dict]:
        """Per block type: dim, smallest singular values, gap, residual and path, to judge the solve's accuracy."""
        out = {}
        for _, atoms, sol in self._parts:
            out[_atoms_label(atoms)] = {
                "dim": sol.dim, "smallest_singular_values": [float(x) for x in sol.singular_values],
                "gap": sol.gap, "residual": sol.residual, "path": sol.path,
            }
        return out

    def __repr__(self) -> str:
        return f"Basis(rep={self.rep!r}, group={self.rep.group.name}, size={self.size}, dim={self.dim})"

    # ------------------------------------------------------------------ dense
    @property
    def Q(self) -> torch.Tensor:
        """Dense (n, dim) basis matrix; raises BasisTooLargeError above the memory cap."""
        return self.dense()

    def dense(self, max_bytes: Optional[int] = None) -> torch.Tensor:
        """Dense (n, dim) basis matrix Q; raises BasisTooLargeError above ``max_bytes`` (default: the memory cap)."""
        cap = defaults.max_dense_bytes() if max_bytes is None else int(max_bytes)
        itemsize = 16 if self.is_complex else 8
        need = self.size * self.dim * itemsize
        if need > cap:
            raise BasisTooLargeError(
                f"dense Q would be {self.size} x {self.dim} = {need / 1e9:.3g} GB, above the cap of {cap / 1e9:.3g} GB; "
                "use basis.project / coefficients / expand (factored, never dense) or raise "
                "SOFTSYM_MAX_DENSE_BYTES"
            )
        q = np.zeros((self.size, self.dim), dtype=np.complex128 if self.is_complex else np.float64)
        col = 0
        for comp, _, sol in self._parts:
            r = sol.dim
            if r == 0:
                continue
            idx = comp.indices()  # (c, s)
            for i in range(comp.count):
                q[idx[i], col:col + r] = sol.Q
                col += r
        return torch.from_numpy(q)

    # ------------------------------------------------------------------ factored application
    def _tensors(self, device, dtype):
        key = (str(device), dtype)
        if key not in self._torch_cache:
            entries, col = [], 0
            for comp, _, sol in self._parts:
                r = sol.dim
                idx = torch.as_tensor(comp.indices(), device=device)
                qb = torch.as_tensor(sol.Q, device=device).to(dtype)
                entries.append((idx, qb, col, comp.count, r))
                col += comp.count * r
            self._torch_cache[key] = entries
        return self._torch_cache[key]

    def _dtype_for(self, x: torch.Tensor) -> torch.dtype:
        if self.is_complex:
            return torch.complex128 if x.dtype in (torch.float64, torch.complex128) else torch.complex64
        # a complex vector keeps its imaginary part: P (a + i b) = P a + i P b for a real basis
        return x.dtype if (x.dtype.is_floating_point or x.dtype.is_complex) else torch.float64

    def _check(self, x, n: int, what: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x))
        if x.ndim == 0 or x.shape[-1] != n:
            raise RepError(f"{what} expects a last dimension of {n}, got shape {tuple(x.shape)} (rep {self.rep!r})")
        return x

    def project(self, v: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
        """P v with P = Q Q^H, for v of shape (..., n); never forms Q."""
        v = self._check(v, self.size, "project")
        dtype = self._dtype_for(v)
        v = v.to(dtype)
        out = torch.zeros_like(v)
        for idx, qb, _, _, r in self._tensors(v.device, dtype):
            if r == 0:
                continue
            x = v[..., idx]  # (..., c, s)
            out[..., idx] = (x @ qb.conj()) @ qb.transpose(0, 1)
        return out

    def coefficients(self, v: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
        """Q^H v: coordinates (..., dim) of v in the basis."""
        v = self._check(v, self.size, "coefficients")
        dtype = self._dtype_for(v)
        v = v.to(dtype)
        outs = []
        for idx, qb, _, c, r in self._tensors(v.device, dtype):
            if r:
                outs.append((v[..., idx] @ qb.conj()).reshape(*v.shape[:-1], c * r))
        if not outs:
            return v.new_zeros(*v.shape[:-1], 0)
        return torch.cat(outs, dim=-1)

    def expand(self, c: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
        """Q c: the rep vector (..., n) with basis coordinates c (..., dim). Differentiable in c."""
        c = self._check(c, self.dim, "expand")
        dtype = self._dtype_for(c)
        c = c.to(dtype)
        out = c.new_zeros(*c.shape[:-1], self.size)
        for idx, qb, col, cnt, r in self._tensors(c.device, dtype):
            if r == 0:
                continue
            coef = c[..., col:col + cnt * r].reshape(*c.shape[:-1], cnt, r)
            out = _scatter(out, idx, coef @ qb.transpose(0, 1))
        return out


def _scatter(out: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Out-of-place out[..., idx] = values (keeps autograd happy)."""
    flat_idx = idx.reshape(-1)
    vals = values.reshape(*values.shape[:-2], -1)
    return out.index_copy(-1, flat_idx, vals) if out.ndim == 1 else out.index_copy(out.ndim - 1, flat_idx, vals)


class Projector:
    """P = Q Q^T of a basis, applied factored: ``Projector(basis)(v)``."""

    def __init__(self, basis: Basis):
        self.basis = basis

    def __call__(self, v: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
        return self.basis.project(v)

    def __matmul__(self, v: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
        """``P @ v`` with matrix semantics, like ``rho(g) @ M``: a vector (n,) is projected, a matrix (n, k) has
        each of its columns projected (P M). ``P(v)`` projects the rows of a batch (..., n) instead."""
        v = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
        if v.ndim == 2:
            return self.basis.project(v.transpose(0, 1)).transpose(0, 1)
        if v.ndim != 1:
            raise RepError(f"P @ v needs a vector ({self.basis.size},) or a matrix ({self.basis.size}, k), got shape "
                           f"{tuple(v.shape)}; use P(v) for a batch of rows (..., {self.basis.size})")
        return self.basis.project(v)

    @property
    def shape(self) -> Tuple[int, int]:
        """(n, n), like a matrix."""
        return (self.basis.size, self.basis.size)


def _valid_shape(sol: Optional[BlockSolution], s: int) -> Optional[BlockSolution]:
    """A cached block whose basis does not have the block's s rows (a foreign or damaged entry) is ignored."""
    if sol is None:
        return None
    q = sol.Q
    if q.ndim != 2 or q.shape[0] != s or q.shape[1] > s or not np.all(np.isfinite(q)):
        return None
    return sol


#: blocks solved (not found in a cache) and blocks found in the memory or disk cache by this process, e.g. to tell
#: a cold run from a warm one
blocks_solved = 0
blocks_cached = 0


def _hit(sol: BlockSolution) -> BlockSolution:
    global blocks_cached
    blocks_cached += 1
    return sol


def _solve(group, atoms, tol: float) -> BlockSolution:
    global blocks_solved
    from .solve import solve_block

    blocks_solved += 1
    return solve_block(group, atoms, tol)


def _solve_cached(group, atoms, tol: float, use_cache: bool) -> BlockSolution:
    """Memory cache, then disk cache, then solve (the solver, and so scipy, is imported only on a miss)."""
    if not use_cache:
        return _solve(group, atoms, tol)
    key = _cache.block_key(group.key, atoms, tol)
    sol = _cache.memory_get(key)
    if sol is not None:
        return _hit(sol)
    s = group.d ** len(atoms)
    sol = _valid_shape(_cache.load(key), s)
    if sol is None:
        with _cache.locked(key):
            sol = _valid_shape(_cache.load(key), s)  # another process may have finished it while we waited
            if sol is None:
                sol = _solve(group, atoms, tol)
                _cache.store(key, sol)
            else:
                _hit(sol)
    else:
        _hit(sol)
    _cache.memory_put(key, sol)
    return sol


def _check_tol(tol) -> float:
    """The solver tolerance as a float in (0, 1) (default SOLVER_TOL); anything else is a SolverError."""
    if tol is None:
        return float(defaults.SOLVER_TOL)
    try:
        value = float(tol)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(tol, bool) or not (0.0 < value < 1.0):
        raise SolverError(f"tol must be a number in (0, 1), got {tol!r}: it is a relative singular-value threshold "
                          f"(default {defaults.SOLVER_TOL:g})")
    return value


def _check_rep_size(rep: Rep) -> None:
    """Refuse (before building index arrays) a rep whose single float64 vector exceeds the dense memory cap.

    Why: the factored basis still keeps one index per coordinate, so e.g. "V**100" or "10000000000V" would try to
    allocate far more memory than exists; project/expand need vectors of that size anyway."""
    n = rep.size
    cap = defaults.max_dense_bytes()
    if n * 8 > cap:
        raise BasisTooLargeError(
            f"rep {_short(rep)} of {rep.group.name} has dimension {n:,}: one float64 vector alone would be "
            f"{n * 8 / 1e9:.3g} GB, above the cap of {cap / 1e9:.3g} GB; use fewer copies or tensor factors (or raise "
            "SOFTSYM_MAX_DENSE_BYTES)"
        )


def _short(rep: Rep, limit: int = 80) -> str:
    text = repr(rep)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def equivariant_basis(rep: Rep, tol: Optional[float] = None, cache: bool = True) -> Basis:
    """Orthonormal float64 basis of the invariant vectors of ``rep`` (use ``Hom(a, b)`` for equivariant maps).

    Parameters
    ----------
    rep : Rep bound to a group, e.g. ``softsym.Hom(V(G), V(G)**2)``.
    tol : relative singular-value threshold (default :data:`softsym.defaults.SOLVER_TOL`).
    cache : read and write the on-disk cache (``SOFTSYM_CACHE`` overrides its location).

    >>> import softsym
    >>> G = softsym.group("O(3)")
    >>> softsym.equivariant_basis(softsym.rep("V**2", G)).dim
    1
    """
    if not isinstance(rep, Rep):
        raise RepError(f"equivariant_basis needs a Rep (e.g. softsym.rep('V**2', 'O(3)')), got {type(rep).__name__}")
    group = rep._require_group()
    tol = _check_tol(tol)
    if not isinstance(cache, (bool, np.bool_)):  # cache="no" would be truthy
        raise SolverError(f"cache must be True or False, got {cache!r}")
    _check_rep_size(rep)
    t0 = time.perf_counter()
    solved: Dict[tuple, BlockSolution] = {}
    parts = []
    for comp in rep.components:
        atoms = canonical_atoms(group, comp.atoms)
        if atoms not in solved:
            solved[atoms] = _solve_cached(group, atoms, tol, cache)
        parts.append((comp, atoms, solved[atoms]))
    return Basis(rep, parts, tol, time.perf_counter() - t0)
