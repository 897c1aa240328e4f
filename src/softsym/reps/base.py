"""Representations as algebra: leaves V, V*, V0 bound to a group; direct sums and tensor products.

A rep decomposes into *components*: tensor products of V / V* factors ("atoms") placed at index sets of the
rep's coordinates. Components are what the solver works on and what the structured operators act on.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import RepError
from ..groups.base import Group

__all__ = ["Rep", "Leaf", "SumRep", "ProdRep", "Component", "RepOperator", "V", "V0", "Vdual", "Scalar"]

VEC, DUAL = 0, 1  # atom codes


@dataclass(frozen=True)
class Component:
    """A pure tensor block V^(x)..(x)V* (``atoms``: 0 = V, 1 = V*) repeated at ``offsets[i] + base``."""

    atoms: Tuple[int, ...]
    base: np.ndarray  # (s,) int64, positions of the block's row-major tensor entries relative to an offset
    offsets: np.ndarray  # (c,) int64

    @property
    def block_size(self) -> int:
        return int(self.base.shape[0])

    @property
    def count(self) -> int:
        return int(self.offsets.shape[0])

    def indices(self) -> np.ndarray:
        """(count, block_size) positions in the rep's coordinates."""
        return self.offsets[:, None] + self.base[None, :]


def _refuse_operand(other, op: str) -> None:
    """RepError for numbers combined with a rep in a way the algebra has no meaning for (other types: Python's own
    TypeError via NotImplemented)."""
    if isinstance(other, (bool, np.bool_)):
        raise RepError(f"a rep cannot be combined with the bool {other!r} by {op!r}")
    if isinstance(other, (int, float, np.number)):
        if op == "+":
            raise RepError(f"a number cannot be added to a rep (got {other!r}); for k scalar channels add k*V0, "
                           "e.g. V + 3*V0")
        raise RepError(f"a rep's multiplicity must be a non-negative integer, got {other!r}; e.g. 3*V")


class Rep:
    """Base class of representations. Build them with V, V0, T(p, q), +, n*R, R*R, R@R, R**k, R.T, Hom."""

    # ------------------------------------------------------------------ structure (subclasses)
    def _children(self) -> tuple:
        return ()

    def _rebuild(self, children: tuple) -> "Rep":
        return self

    def _components(self, d: int) -> List[Component]:
        raise NotImplementedError

    def _size(self, d: int) -> int:
        raise NotImplementedError

    def _dual(self) -> "Rep":
        raise NotImplementedError

    # ------------------------------------------------------------------ group binding
    @property
    def group(self) -> Optional[Group]:
        """The group all leaves are bound to, or None for an unbound rep expression."""
        return self._group

    def bind(self, group: Union[str, Group]) -> "Rep":
        """Bind every leaf to ``group`` (a Group or spec string); rebinding to another group is an error."""
        from ..groups.parse import parse_group

        g = parse_group(group)
        if self._group is not None:
            if self._group != g:
                raise RepError(
                    f"rep {self!r} is already bound to {self._group.name}; it cannot be used with {g.name}. "
                    "Build it unbound (e.g. T(2)) and bind it to each group separately."
                )
            return self
        return self._rebuild(tuple(c.bind(g) for c in self._children()))

    def unbound(self) -> "Rep":
        """The same rep expression with no group, e.g. to bind one rep to several candidate groups."""
        if self._group is None:
            return self
        return self._rebuild(tuple(c.unbound() for c in self._children()))

    def __call__(self, group) -> "Rep":
        return self.bind(group)

    def _require_group(self) -> Group:
        if self._group is None:
            raise RepError(f"rep {self!r} is not bound to a group: call it on one first, e.g. rep(G) or T(2)(G)")
        return self._group

    # ------------------------------------------------------------------ sizes and components
    @property
    def size(self) -> int:
        """Dimension of the representation space."""
        return self._size(self._require_group().d)

    def __len__(self) -> int:
        return self.size

    @cached_property
    def components(self) -> List[Component]:
        """The tensor blocks of this rep with their placements (bound reps only)."""
        return self._components(self._require_group().d)

    def _index_tensor(self, i: int, device) -> torch.Tensor:
        """Cached (count, block_size) index tensor of component ``i`` on ``device``."""
        cache = self.__dict__.setdefault("_index_cache", {})
        k = (i, str(device))
        if k not in cache:
            cache[k] = torch.as_tensor(self.components[i].indices(), device=device)
        return cache[k]

    @property
    def key(self) -> str:
        """Structural key (with the group's generator hash when bound)."""
        gk = self._group.key[:16] if self._group is not None else "unbound"
        return f"{self!r}|{gk}"

    # ------------------------------------------------------------------ algebra
    def __add__(self, other) -> "Rep":
        if isinstance(other, int) and other == 0:
            return self
        if not isinstance(other, Rep):
            _refuse_operand(other, "+")
            return NotImplemented
        return SumRep.of([(self, 1), (other, 1)])

    def __radd__(self, other) -> "Rep":
        if isinstance(other, int) and other == 0:  # sum([...]) support
            return self
        _refuse_operand(other, "+")
        return NotImplemented

    def __mul__(self, other) -> "Rep":
        if isinstance(other, (int, np.integer)) and not isinstance(other, bool):
            return SumRep.of([(self, int(other))])
        if not isinstance(other, Rep):
            _refuse_operand(other, "*")
            return NotImplemented
        return ProdRep.of([self, other])

    def __rmul__(self, other) -> "Rep":
        if isinstance(other, (int, np.integer)) and not isinstance(other, bool):
            return SumRep.of([(self, int(other))])
        _refuse_operand(other, "*")
        return NotImplemented

    def __matmul__(self, other) -> "Rep":
        if not isinstance(other, Rep):
            return NotImplemented
        return ProdRep.of([self, other])

    def __pow__(self, k) -> "Rep":
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise RepError(f"tensor power needs a non-negative integer, got {k!r}")
        if k == 0:
            return Scalar if self._group is None else Scalar.bind(self._group)
        return ProdRep.of([self] * int(k))

    @property
    def T(self) -> "Rep":
        """The dual representation (rho(g)^-T), as EMLP writes it."""
        return self._dual()

    def dual(self) -> "Rep":
        """The dual representation (rho(g)^-T)."""
        return self._dual()

    # ------------------------------------------------------------------ operators
    def rho(self, g: Union[torch.Tensor, np.ndarray]) -> "RepOperator":
        """Structured operator rho(g) for g of shape (d, d) or a batch (B, d, d)."""
        return RepOperator(self, g, "rho")

    def drho(self, a: Union[torch.Tensor, np.ndarray]) -> "RepOperator":
        """Structured operator drho(A) of a Lie-algebra element A (d, d) or batch (B, d, d)."""
        return RepOperator(self, a, "drho")

    def rho_dense(self, g: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
        """rho(g) as a dense (n, n) tensor (small reps only)."""
        return self.rho(g).dense()

    def drho_dense(self, a: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
        """drho(A) as a dense (n, n) tensor (small reps only)."""
        return self.drho(a).dense()

    # ------------------------------------------------------------------ misc
    def __eq__(self, other) -> bool:
        return isinstance(other, Rep) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __str__(self) -> str:
        return repr(self)


def _common_group(reps) -> Optional[Group]:
    group = None
    for r in reps:
        g = r.group
        if g is None:
            continue
        if group is None:
            group = g
        elif g != group:
            raise RepError(
                f"cannot combine reps of different groups ({group.name} and {g.name}); "
                "use a direct-product group or bind both reps to the same group"
            )
    return group


class Leaf(Rep):
    """V (defining rep), V* (its dual) or V0 (scalar), optionally bound to a group."""

    _NAMES = {"V": "V", "V*": "V*", "V0": "V0"}

    def __init__(self, kind: str, group: Optional[Group] = None):
        if kind not in self._NAMES:
            raise RepError(f"unknown leaf kind {kind!r}")
        self.kind, self._group = kind, group

    def bind(self, group: Union[str, Group]) -> "Rep":
        from ..groups.parse import parse_group

        g = parse_group(group)
        if self._group is not None and self._group != g:
            raise RepError(f"{self!r} is bound to {self._group.name}, not {g.name}; build it unbound and bind once")
        return Leaf(self.kind, g)

    def unbound(self) -> "Rep":
        return self if self._group is None else Leaf(self.kind)

    def _size(self, d: int) -> int:
        return 1 if self.kind == "V0" else d

    def _components(self, d: int) -> List[Component]:
        if self.kind == "V0":
            return [Component((), np.zeros(1, np.int64), np.zeros(1, np.int64))]
        atom = VEC if self.kind == "V" else DUAL
        return [Component((atom,), np.arange(d, dtype=np.int64), np.zeros(1, np.int64))]

    def _dual(self) -> Rep:
        return Leaf({"V": "V*", "V*": "V", "V0": "V0"}[self.kind], self._group)

    def __repr__(self) -> str:
        return self.kind


class SumRep(Rep):
    """Direct sum of (rep, multiplicity) terms, laid out in order, copies consecutive."""

    def __init__(self, terms: Tuple[Tuple[Rep, int], ...]):
        self.terms = terms
        self._group = _common_group(r for r, _ in terms)

    @staticmethod
    def of(terms) -> Rep:
        flat: List[Tuple[Rep, int]] = []
        for rep, mult in terms:
            if mult < 0:
                raise RepError(f"multiplicity must be non-negative, got {mult}")
            if mult == 0:
                continue
            if isinstance(rep, SumRep) and len(rep.terms) == 1:
                rep, mult = rep.terms[0][0], rep.terms[0][1] * mult
            if isinstance(rep, SumRep) and mult == 1:
                items = list(rep.terms)
            else:
                items = [(rep, mult)]
            flat.extend(items)
        if not flat:
            raise RepError("empty representation (zero copies of everything); a rep needs at least one term")
        group = _common_group(r for r, _ in flat)
        if group is not None:  # bind first, so V(G) + V merges into 2*V(G)
            flat = [(r.bind(group), m) for r, m in flat]
        merged: List[Tuple[Rep, int]] = []
        for r, m in flat:
            if merged and repr(merged[-1][0]) == repr(r) and merged[-1][0].group == r.group:
                merged[-1] = (merged[-1][0], merged[-1][1] + m)
            else:
                merged.append((r, m))
        flat = merged
        if len(flat) == 1 and flat[0][1] == 1:
            return flat[0][0]
        return SumRep(tuple(flat))

    def _children(self):
        return tuple(r for r, _ in self.terms)

    def _rebuild(self, children):
        return SumRep.of([(c, m) for c, (_, m) in zip(children, self.terms)])

    def _size(self, d):
        return sum(r._size(d) * m for r, m in self.terms)

    def _components(self, d):
        comps, start = [], 0
        for rep, mult in self.terms:
            s = rep._size(d)
            copies = start + np.arange(mult, dtype=np.int64) * s
            for c in rep._components(d):
                offs = (copies[:, None] + c.offsets[None, :]).ravel()
                comps.append(Component(c.atoms, c.base, offs))
            start += s * mult
        return _merge(comps)

    def _dual(self):
        return SumRep.of([(r._dual(), m) for r, m in self.terms])

    def __repr__(self):
        return "+".join(repr(r) if m == 1 else f"{m}*{_paren(r)}" for r, m in self.terms)


class ProdRep(Rep):
    """Tensor product of reps (Kronecker layout, row-major)."""

    def __init__(self, factors: Tuple[Rep, ...]):
        self.factors = factors
        self._group = _common_group(factors)

    @staticmethod
    def of(factors) -> Rep:
        flat: List[Rep] = []
        for f in factors:
            flat.extend(f.factors if isinstance(f, ProdRep) else [f])
        group = _common_group(flat)
        if group is not None:
            flat = [f.bind(group) for f in flat]
        non_scalar = [f for f in flat if not (isinstance(f, Leaf) and f.kind == "V0")]
        if not non_scalar:
            return flat[0]
        if len(non_scalar) == 1:
            return non_scalar[0]
        return ProdRep(tuple(non_scalar))

    def _children(self):
        return self.factors

    def _rebuild(self, children):
        return ProdRep.of(children)

    def _size(self, d):
        out = 1
        for f in self.factors:
            out *= f._size(d)
        return out

    def _components(self, d):
        comps = self.factors[0]._components(d)
        n_left = self.factors[0]._size(d)
        for f in self.factors[1:]:
            right, n_right = f._components(d), f._size(d)
            new = []
            for a in comps:
                for b in right:
                    base = (a.base[:, None] * n_right + b.base[None, :]).ravel()
                    offs = (a.offsets[:, None] * n_right + b.offsets[None, :]).ravel()
                    new.append(Component(a.atoms + b.atoms, base, offs))
            comps, n_left = _merge(new), n_left * n_right
        return comps

    def _dual(self):
        return ProdRep.of([f._dual() for f in self.factors])

    def __repr__(self):
        return "⊗".join(_paren(f) for f in self.factors)


def _paren(r: Rep) -> str:
    return f"({r!r})" if isinstance(r, (SumRep, ProdRep)) else repr(r)


def _merge(comps: List[Component]) -> List[Component]:
    """Merge components with equal atoms and equal base pattern (concatenating their offsets)."""
    out: List[Component] = []
    index = {}
    for c in comps:
        k = (c.atoms, c.base.shape[0], c.base.tobytes())
        if k in index:
            i = index[k]
            out[i] = Component(c.atoms, out[i].base, np.concatenate([out[i].offsets, c.offsets]))
        else:
            index[k] = len(out)
            out.append(c)
    return out


V = Leaf("V")
Vdual = Leaf("V*")
V0 = Leaf("V0")
Scalar = V0


class RepOperator:
    """rho(g) or drho(A) of a rep, applied block by block without forming the (n, n) matrix.

    ``op.apply(x)`` maps x of shape (..., n) (or (B, n) with a batch of B matrices) to the same shape;
    ``op @ v`` uses matrix semantics for v of shape (n,) or (n, k); ``op.dense()`` forms the matrix.
    """

    def __init__(self, rep: Rep, mat, kind: str):
        group = rep._require_group()
        m = mat if isinstance(mat, torch.Tensor) else torch.as_tensor(np.asarray(mat))
        if m.shape[-2:] != (group.d, group.d) or m.ndim not in (2, 3):
            raise RepError(
                f"{kind}(.) of a rep of {group.name} needs a ({group.d}, {group.d}) matrix or a batch "
                f"(B, {group.d}, {group.d}); got shape {tuple(m.shape)}"
            )
        self.rep, self.kind, self.mat, self.n = rep, kind, m, rep.size
        self._per_atom = None

    @property
    def shape(self) -> Tuple[int, int]:
        return (self.n, self.n)

    def _atom_mats(self, dtype, device):
        m = self.mat.to(device=device, dtype=dtype)
        if self.kind == "rho":
            if not any(DUAL in c.atoms for c in self.rep.components):
                return {VEC: m}
            inv, info = torch.linalg.inv_ex(m)
            if bool((info != 0).any()):
                raise RepError(f"rho(g) of {self.rep!r} needs the inverse of g for its dual factors, but g is singular; "
                               "group elements must be invertible")
            return {VEC: m, DUAL: inv.transpose(-1, -2)}
        return {VEC: m, DUAL: -m.transpose(-1, -2)}

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to x of shape (..., n); with a batch of matrices (B, d, d), x must be (B, n) or (n,)."""
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x))
        if x.ndim == 0 or x.shape[-1] != self.n:
            got = f"a vector of size {x.shape[-1]}" if x.ndim else "a 0-d tensor"
            raise RepError(f"{got} given to an operator of a rep of size {self.n} ({self.rep!r}); "
                           f"pass shape (..., {self.n})")
        batched = self.mat.ndim == 3
        if batched:
            b = self.mat.shape[0]
            if x.ndim == 1:
                x = x.expand(b, self.n)
            if x.ndim != 2 or x.shape[0] != b:
                raise RepError(f"a batch of {b} matrices needs inputs of shape ({b}, {self.n}), got {tuple(x.shape)}")
        dtype = torch.promote_types(x.dtype, self.mat.dtype)
        if not dtype.is_floating_point and not dtype.is_complex:
            dtype = torch.float64
        x = x.to(dtype)
        mats = self._atom_mats(dtype, x.device)
        comps = self.rep.components
        whole = len(comps) == 1 and comps[0].count == 1 and comps[0].offsets[0] == 0 and comps[0].block_size == self.n
        out = torch.empty_like(x) if not whole else None
        lead = x.shape[:-1]
        for ci, comp in enumerate(comps):
            p, d = len(comp.atoms), self.rep.group.d
            if whole:
                xc = x.reshape(*lead, 1, self.n)
            else:
                idx = self.rep._index_tensor(ci, x.device)
                xc = x[..., idx]  # (..., c, s)
            if p == 0:
                yc = xc if self.kind == "rho" else torch.zeros_like(xc)
            else:
                t = xc.reshape(*lead, comp.count, *([d] * p))
                if self.kind == "rho":
                    for ax, atom in enumerate(comp.atoms):
                        t = _apply_axis(t, mats[atom], len(lead) + 1 + ax, batched)
                    yc = t
                else:
                    yc = torch.zeros_like(t)
                    for ax, atom in enumerate(comp.atoms):
                        yc = yc + _apply_axis(t, mats[atom], len(lead) + 1 + ax, batched)
                yc = yc.reshape(*lead, comp.count, comp.block_size)
            if whole:
                return yc.reshape(*lead, self.n)
            out[..., idx] = yc
        return out

    def __matmul__(self, v):
        v = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
        if v.ndim == 1:
            return self.apply(v)
        if self.mat.ndim == 3:
            raise RepError("matrix semantics (op @ M) need a single group element; use op.apply(x) for batches")
        return self.apply(v.transpose(0, 1)).transpose(0, 1)

    def dense(self) -> torch.Tensor:
        """The (n, n) matrix (only for a single group element; memory n^2)."""
        if self.mat.ndim == 3:
            raise RepError("dense() needs a single group element, not a batch")
        dtype = torch.promote_types(self.mat.dtype, torch.float64)
        eye = torch.eye(self.n, dtype=dtype)
        return self.apply(eye).transpose(0, 1).contiguous()  # contiguous: torch.kron & views fail on a transpose


def _apply_axis(t: torch.Tensor, m: torch.Tensor, axis: int, batched: bool) -> torch.Tensor:
    """Contract matrix m (d, d) (or per-batch (B, d, d)) with tensor axis ``axis``: t_i -> sum_j m_ij t_j."""
    y = torch.movedim(t, axis, -1)
    if batched:
        mt = m.transpose(-1, -2).reshape(m.shape[0], *([1] * (y.ndim - 3)), *m.shape[-2:])
    else:
        mt = m.transpose(-1, -2)
    return torch.movedim(y @ mt, -1, axis)
