"""How candidate groups relate: Lie-algebra containment and the candidate that covers all the others.

Used by SoftEMLP (its default ``full_group``) and by the PER tuner (the candidate it leaves unpenalised when the
model names no full group).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..groups.base import Group

__all__ = ["LIE_SPAN_TOL", "lie_algebra_contains", "covering_candidate"]


#: relative residual below which a Lie generator counts as lying in another group's Lie algebra
LIE_SPAN_TOL = 1e-8


def lie_algebra_contains(big: Group, small: Group, tol: float = LIE_SPAN_TOL) -> bool:
    """True when every Lie generator of ``small`` lies in the span of ``big``'s (float64 least squares on the
    flattened generators, residual <= tol relative to the generator's norm); a finite ``small`` is contained."""
    if not len(small.lie_np):
        return True
    d2 = small.d * small.d
    rhs = small.lie_np.reshape(len(small.lie_np), d2).T.astype(np.float64)  # (d^2, k_small)
    basis = big.lie_np.reshape(len(big.lie_np), big.d * big.d).T.astype(np.float64)  # (d^2, k_big)
    norms = np.linalg.norm(rhs, axis=0)
    if not basis.shape[1] or basis.shape[0] != d2:
        return bool(np.all(norms == 0))
    coef = np.linalg.lstsq(basis, rhs, rcond=None)[0]
    return bool(np.all(np.linalg.norm(basis @ coef - rhs, axis=0) <= tol * norms))


def covering_candidate(groups: Sequence[Group], compatible=None) -> Optional[int]:
    """Index of the candidate whose Lie algebra contains every other candidate's, or None when no candidate's does.

    Among several: one for which ``compatible(group)`` holds (e.g. an architecture built for it can serve every
    candidate), then the largest Lie algebra, then the one with the fewest invariant tensors of rank <= 3 (a group
    containing another has a subset of its invariants: O(3) over SO(3), D(3) over C(3), S(5) over Z(5)), then the
    first."""
    covering = [i for i, g in enumerate(groups) if all(lie_algebra_contains(g, h) for h in groups)]
    if not covering:
        return None
    ok = (lambda i: bool(compatible(groups[i]))) if compatible is not None else (lambda i: True)
    best = max((ok(i), len(groups[i].lie_np)) for i in covering)
    tied = [i for i in covering if (ok(i), len(groups[i].lie_np)) == best]
    if len(tied) == 1:
        return tied[0]
    return min(tied, key=lambda i: (_invariant_count(groups[i]), i))


def _invariant_count(group: Group) -> int:
    """Dimension of the invariants of V, V**2 and V**3 (V**3 only while d^3 <= 4096): fewer means a larger group."""
    from ..reps.algebra import T
    from ..reps.basis import equivariant_basis

    ranks = (1, 2, 3) if group.d ** 3 <= 4096 else (1, 2)
    return sum(equivariant_basis(T(r)(group)).dim for r in ranks)


