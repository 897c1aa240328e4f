"""EMLP's hidden-layer representations: ``uniform_rep`` channel allocation, ``gated`` reps and gate indices.

Follows Finzi, Welling & Wilson (ICML 2021), ``emlp.nn``: the channels are spread over tensor ranks so that every
rank gets a similar share of dimensions (``lambert_w`` / ``rank_counts``), and, for groups whose dual differs
from V, the tensors of rank r are split between T(k, r-k) like a binomial distribution
(``binomial_allocation``). Randomness (the ragged part of the binomial split) comes from a seeded numpy
Generator, never the global RNG, so models are reproducible.
"""
from __future__ import annotations

from math import comb
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from ..errors import ConfigError
from ..groups.base import Group
from ..groups.parse import parse_group
from ..reps.algebra import T
from ..reps.base import Rep, SumRep, V0

__all__ = [
    "lambert_w", "rank_counts", "binomial_allocation", "uniform_rep", "uniform_rep_terms", "gated",
    "gate_indices", "is_permutation_group", "num_gates", "architecture_mismatch",
]


def lambert_w(ch: int, d: int) -> int:
    """Largest rank r with (r + 1) d^r <= ch (EMLP's integer "Lambert W"); -1 when ch < 1."""
    if d < 1:
        raise ConfigError(f"d must be positive, got {d}")
    r = 0
    while (r + 1) * d**r <= ch:
        r += 1
        if d == 1 and r > ch:
            break
    return r - 1


def rank_counts(ch: int, d: int) -> np.ndarray:
    """Number of tensors of each rank 0..R used by ``uniform_rep`` for ``ch`` channels (sum_r N_r d^r = ch).

    Repeatedly take the largest rank R that fits and add d^(R-r) tensors of every rank r <= R, i.e. (R+1) d^R
    channels, until the channels are used up.
    """
    if not isinstance(ch, (int, np.integer)) or ch < 1:
        raise ConfigError(f"the number of channels must be a positive integer, got {ch!r}")
    counts = np.zeros(lambert_w(ch, d) + 1, np.int64)
    left = int(ch)
    while left > 0:
        r = lambert_w(left, d)
        counts[: r + 1] += np.array([d ** (r - k) for k in range(r + 1)], np.int64)
        left -= (r + 1) * d**r
    return counts


def binomial_allocation(n: int, rank: int, dual_differs: bool, rng: np.random.Generator) -> Dict[Tuple[int, int], int]:
    """Split ``n`` tensors of total rank ``rank`` into T(k, rank-k), k = 0..rank, like Binomial(rank, 1/2).

    Returns {(p, q): count}. When V* = V (orthogonal generators) all go to T(rank, 0).
    """
    if n <= 0:
        return {}
    if not dual_differs:
        return {(rank, 0): int(n)}
    out: Dict[Tuple[int, int], int] = {}
    per = n // 2**rank
    for k in range(rank + 1):
        if per * comb(rank, k):
            out[(k, rank - k)] = per * comb(rank, k)
    for p in rng.binomial(rank, 0.5, n % 2**rank):
        key = (int(p), rank - int(p))
        out[key] = out.get(key, 0) + 1
    return out


def uniform_rep_terms(ch: int, d: int, dual_differs: bool, seed: int = 0) -> List[Tuple[Tuple[int, int], int]]:
    """((p, q), multiplicity) terms of ``uniform_rep``, ordered by rank then p descending (V before V*)."""
    rng = np.random.default_rng(seed)
    terms: List[Tuple[Tuple[int, int], int]] = []
    for rank, n in enumerate(rank_counts(ch, d)):
        alloc = binomial_allocation(int(n), rank, dual_differs, rng)
        for pq in sorted(alloc, key=lambda t: -t[0]):
            terms.append((pq, alloc[pq]))
    return terms


def uniform_rep(ch: int, group: Optional[Union[str, Group]] = None, *, seed: int = 0, d: Optional[int] = None,
                dual_differs: Optional[bool] = None) -> Rep:
    """EMLP's hands-off hidden representation with ``ch`` channels (size exactly ``ch``).

    >>> import softsym
    >>> from softsym.nn import uniform_rep
    >>> uniform_rep(384, "O(3)")
    102*V0+34*V+11*(V⊗V)+3*(V⊗V⊗V)

    With ``group=None`` an unbound rep is returned (give ``d`` and ``dual_differs``).
    """
    if group is not None:
        g = parse_group(group)
        d, dual_differs = g.d, not g.is_orthogonal
    elif d is None or dual_differs is None:
        raise ConfigError("uniform_rep needs a group, or d= and dual_differs= for an unbound rep")
    terms = uniform_rep_terms(ch, d, bool(dual_differs), seed)
    rep = SumRep.of([(T(p, q), m) for (p, q), m in terms])
    return rep.bind(g) if group is not None else rep


def is_permutation_group(group: Group) -> bool:
    """No Lie algebra and every discrete generator a (0/1) permutation matrix: V and all its tensor powers are
    permutation representations, on which a pointwise nonlinearity is equivariant (EMLP's ``is_permutation``)."""
    if len(group.lie_np) or group.is_complex:
        return False
    for h in group.discrete_np:
        if not np.all((h == 0) | (h == 1)):
            return False
        if not (np.all(h.sum(0) == 1) and np.all(h.sum(1) == 1)):
            return False
    return True


def _bound(rep: Rep, group) -> Tuple[Rep, Group]:
    if rep.group is not None:
        if group is not None and parse_group(group) != rep.group:
            from ..errors import RepError

            raise RepError(f"rep {rep!r} is bound to {rep.group.name}, not {parse_group(group).name}")
        return rep, rep.group
    if group is None:
        from ..errors import RepError

        raise RepError(f"rep {rep!r} is not bound to a group; pass group=")
    g = parse_group(group)
    return rep.bind(g), g


def num_gates(rep: Rep, group=None) -> int:
    """Number of gate scalars ``gated`` adds: one per non-scalar tensor copy (none for permutation groups)."""
    bound, g = _bound(rep, group)
    if is_permutation_group(g):
        return 0
    return int(sum(c.count for c in bound.components if c.atoms))


def gated(rep: Rep, group: Optional[Union[str, Group]] = None) -> Rep:
    """``rep`` plus one scalar gate per non-scalar tensor copy, appended at the end (EMLP's ``gated``).

    The result is bound if ``rep`` is; an unbound rep needs ``group`` to count its copies.
    """
    k = num_gates(rep, group)
    if k == 0:
        return rep
    gate = V0 if rep.group is None else V0.bind(rep.group)
    return SumRep.of([(rep, 1), (gate, k)])


def architecture_mismatch(full_group: Group, candidate: Group, bilinear: bool = True) -> Optional[str]:
    """Why EMLP's gates and bilinear layers built for ``full_group`` are *not* ``candidate``-equivariant, or None.

    Once its linear layers are candidate-equivariant (and without RPP's swish path, ``swish_path=False``, whose
    pointwise term is equivariant only under permutations), an EMLP-architecture model is candidate-equivariant
    exactly when (a) its gates are: pointwise swish (``full_group`` a permutation group) needs a permutation candidate;
    and (b) its bilinear layers are: built with V* identified with V (orthogonal ``full_group``) they need an
    orthogonal candidate (with V and V* kept apart they are equivariant under all of GL(d)).
    """
    if is_permutation_group(full_group) and not is_permutation_group(candidate):
        return (f"the full group {full_group.name} is a permutation group, so the model uses pointwise swish "
                f"gates, which are equivariant only under permutations, and {candidate.name} is not a group of "
                f"permutation matrices")
    if bilinear and full_group.is_orthogonal and not candidate.is_orthogonal:
        return (f"the full group {full_group.name} is orthogonal, so the bilinear layers identify V* with V, which "
                f"is only equivariant under orthogonal groups, and {candidate.name} is not orthogonal")
    return None


def gate_indices(rep: Rep, group: Optional[Union[str, Group]] = None) -> np.ndarray:
    """For every coordinate of ``rep``: the index (into the ``gated(rep)`` vector) of the scalar that gates it.

    Scalars gate themselves (sigmoid(x) x = swish); copy j of a non-scalar tensor is gated by coordinate
    ``rep.size + j``; for permutation groups every coordinate gates itself (pointwise swish).
    """
    bound, g = _bound(rep, group)
    n = bound.size
    idx = np.arange(n, dtype=np.int64)
    if is_permutation_group(g):
        return idx
    j = 0
    for comp in bound.components:
        if not comp.atoms:
            continue
        pos = comp.indices()
        idx[pos] = (n + j + np.arange(comp.count))[:, None]
        j += comp.count
    return idx
