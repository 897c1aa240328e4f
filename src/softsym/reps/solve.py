"""Equivariant-basis solver for one tensor block V^(x)..(x)V* of a group.

Paths, chosen from the generator matrices (never from a group's name):

* ``trivial``  - no generators: every vector is invariant.
* ``orbit``    - no Lie algebra and signed-permutation generators: invariants are signed orbit indicators
  (connected components over index tuples), no linear algebra.
* ``dense``    - small blocks: SVD of the stacked dense constraint.
* ``weights``  - diagonalise a generic Lie-algebra element H = U L U^-1; invariants live on index tuples of zero
  total weight; the remaining generators give a sparse constraint on those columns only. Discrete generators are
  imposed afterwards on the (small) null space.
* ``eigen1``   - no Lie algebra: the same with one diagonalisable discrete generator, keeping tuples whose
  eigenvalue product is 1.
* ``iterative`` - matrix-free LOBPCG on sum C_i^H C_i for anything else.

Every result is checked against the original constraints (:data:`softsym.defaults.RESIDUAL_TOL`); a failing
path falls back to the next.
"""
from __future__ import annotations

import logging
import time
import warnings
from typing import Optional, Tuple

import numpy as np

from .. import defaults
from ..errors import BasisTooLargeError, SolverError
from ..groups.base import Group
from .base import DUAL, VEC
from .block import BlockSolution, canonical_atoms

__all__ = ["BlockSolution", "solve_block", "canonical_atoms", "dense_constraint", "block_residual"]

log = logging.getLogger(__name__)


from ..defaults import ITERATIVE_MAX_BLOCK, ITERATIVE_MAX_DIM, SVD_TOL_FLOOR  # noqa: E402


def _block_label(group: Group, atoms) -> str:
    body = "⊗".join("V*" if a == DUAL else "V" for a in atoms) or "V0"
    return f"the {group.d}^{len(atoms)} = {group.d ** len(atoms):,}-dim block {body} of {group.name}"


def _check_alloc(group: Group, atoms, rows: int, cols: int, itemsize: int, what: str) -> None:
    """Refuse an array of rows x cols entries above the dense memory cap (BasisTooLargeError), before allocating."""
    need = int(rows) * int(cols) * int(itemsize)
    cap = defaults.max_dense_bytes()
    if need > cap:
        raise BasisTooLargeError(
            f"{_block_label(group, atoms)} is too large: {what} would take {need / 1e9:.3g} GB, above the cap of "
            f"{cap / 1e9:.3g} GB; use fewer tensor factors (or raise SOFTSYM_MAX_DENSE_BYTES)"
        )


# ---------------------------------------------------------------------------------------------- helpers
def _atom_lie(a: np.ndarray, atom: int) -> np.ndarray:
    return a if atom == VEC else -a.T


def _atom_disc(h: np.ndarray, atom: int) -> np.ndarray:
    return h if atom == VEC else np.linalg.inv(h).T


def _apply_axes(x: np.ndarray, mats, d: int) -> np.ndarray:
    """Apply mats[k] along tensor axis k of x (s, r) where s = d^p (rho-like product action)."""
    p = len(mats)
    r = x.shape[1]
    t = x.reshape((d,) * p + (r,))
    for ax, m in enumerate(mats):
        t = np.moveaxis(np.tensordot(m, t, axes=([1], [ax])), 0, ax)
    return t.reshape(d**p, r)


def _apply_kron_sum(x: np.ndarray, mats, d: int) -> np.ndarray:
    """Apply sum_k I..(x) mats[k] (x)..I (drho-like action) to x (s, r)."""
    p = len(mats)
    r = x.shape[1]
    t = x.reshape((d,) * p + (r,))
    out = np.zeros_like(t, dtype=np.result_type(t, *mats))
    for ax, m in enumerate(mats):
        out = out + np.moveaxis(np.tensordot(m, t, axes=([1], [ax])), 0, ax)
    return out.reshape(d**p, r)


def _normalised_lie(group: Group) -> np.ndarray:
    lie = group.lie_np
    if not len(lie):
        return lie
    norms = np.linalg.norm(lie.reshape(len(lie), -1), axis=1)
    keep = norms > 0
    return lie[keep] / norms[keep][:, None, None]


def block_residual(group: Group, atoms, q: np.ndarray) -> float:
    """max over generators of ||drho(A/|A|) q|| and ||rho(h) q - q|| / max(1, |rho(h)|), per column."""
    d = group.d
    if q.shape[1] == 0 or not atoms:
        return 0.0
    res = 0.0
    if group.is_signed_permutation:  # exact index arithmetic instead of d x d contractions
        for h in group.discrete_np:
            new, sg = _signed_perm_action(h, len(atoms))
            y = np.empty_like(q)
            y[new] = sg[:, None] * q
            res = max(res, float(np.linalg.norm(y - q, axis=0).max()))
        return res
    for a in _normalised_lie(group):
        y = _apply_kron_sum(q, [_atom_lie(a, t) for t in atoms], d)
        res = max(res, float(np.linalg.norm(y, axis=0).max()))
    for h in group.discrete_np:
        mats = [_atom_disc(h, t) for t in atoms]
        scale = max(1.0, float(np.prod([np.linalg.norm(m, 2) for m in mats])))
        y = _apply_axes(q, mats, d) - q
        res = max(res, float(np.linalg.norm(y, axis=0).max()) / scale)
    return res


def dense_constraint(group: Group, atoms) -> np.ndarray:
    """Stacked dense constraint [drho(A_i/|A_i|); rho(h_j) - I] of a block (K s, s). Small blocks only."""
    d, p = group.d, len(atoms)
    s = d**p
    eye = np.eye(s, dtype=np.complex128 if group.is_complex else np.float64)
    rows = []
    for a in _normalised_lie(group):
        rows.append(_apply_kron_sum(eye, [_atom_lie(a, t) for t in atoms], d))
    for h in group.discrete_np:
        rows.append(_apply_axes(eye, [_atom_disc(h, t) for t in atoms], d) - eye)
    if not rows:
        return np.zeros((0, s), eye.dtype)
    return np.concatenate(rows, axis=0)


def _spectrum(sig: np.ndarray, r: int, keep: int = 8) -> Tuple[np.ndarray, float]:
    """Smallest relative singular values around the cut and the gap above the null space."""
    sig = np.sort(np.abs(sig))
    top = sig[-1] if len(sig) and sig[-1] > 0 else 1.0
    rel = sig / top
    if r >= len(rel):
        gap = float("inf")
    elif r == 0:
        gap = float("inf") if rel[0] > 0 else 0.0
    else:
        gap = float(rel[r] / rel[r - 1]) if rel[r - 1] > 0 else float("inf")  # an exact null space: no finite gap
    return rel[: r + keep], gap


def _null_from_svd(c: np.ndarray, tol: float):
    """Null space of c via SVD: (N (s, r), relative singular values, gap)."""
    s = c.shape[1]
    tol = max(float(tol), SVD_TOL_FLOOR)
    if c.shape[0] == 0:
        return np.eye(s, dtype=c.dtype), np.zeros(0), float("inf")
    _, sig, vh = np.linalg.svd(c, full_matrices=c.shape[0] < s)
    sig_full = np.zeros(s)
    sig_full[: len(sig)] = sig
    top = max(sig_full.max(), 1e-300)
    # the null space is where sigma <= tol * max(1, top): an all-satisfied constraint (top ~ 1e-15) is all null
    null_mask = sig_full <= tol * max(1.0, top)
    order = np.argsort(sig_full)
    r = int(null_mask.sum())
    n_vecs = vh.conj().T[:, order[:r]]
    rel, gap = _spectrum(sig_full, r)
    return n_vecs, rel, gap


def _orthonormal_real_span(x: np.ndarray, r: int) -> Optional[np.ndarray]:
    """Orthonormal real basis of span{Re x, Im x}, which must have dimension r (conjugation-closed spaces)."""
    both = np.concatenate([x.real, x.imag], axis=1)
    if both.shape[1] == 0:
        return np.zeros((x.shape[0], 0))
    u, sv, _ = np.linalg.svd(both, full_matrices=False)
    if r and (sv[r - 1] <= 1e-8 * sv[0] or (len(sv) > r and sv[r] > 1e-6 * sv[0])):
        return None
    return u[:, :r]


def _impose_discrete(group: Group, atoms, q: np.ndarray, tol: float, skip: int = -1):
    """Restrict the columns of orthonormal q (s, r) to those fixed by every discrete generator (except ``skip``)."""
    d = group.d
    blocks = []
    for i, h in enumerate(group.discrete_np):
        if i == skip:
            continue
        blocks.append(_apply_axes(q, [_atom_disc(h, t) for t in atoms], d) - q)
    if not blocks or q.shape[1] == 0:
        return q, None
    stacked = np.concatenate(blocks, axis=0)
    n_vecs, rel, gap = _null_from_svd(stacked, tol)
    q2 = q @ n_vecs
    # re-orthonormalise (q orthonormal and n_vecs orthonormal, so this only cleans round-off)
    if q2.shape[1]:
        q2, _ = np.linalg.qr(q2)
    return q2, (rel, gap)


# ---------------------------------------------------------------------------------------------- paths
def _path_trivial(group: Group, atoms, tol):
    s = group.d ** len(atoms)
    _check_alloc(group, atoms, s, s, 16 if group.is_complex else 8, f"its {s:,} x {s:,} basis (every vector is invariant)")
    return np.eye(s, dtype=np.complex128 if group.is_complex else np.float64), np.zeros(0), float("inf"), {}


def _components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Connected-component labels (the smallest node of each component) of an undirected graph, in numpy.

    Hook every edge's larger root onto the smaller one, then compress paths by pointer jumping; repeats until no
    edge joins two different roots (a few rounds: the number grows like log of the component diameter).
    """
    parent = np.arange(n)
    while True:
        pu, pv = parent[u], parent[v]
        differ = pu != pv
        if not differ.any():
            return parent
        lo, hi = np.minimum(pu[differ], pv[differ]), np.maximum(pu[differ], pv[differ])
        np.minimum.at(parent, hi, lo)
        while True:  # pointer jumping until every node points at a root
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt


def _signed_perm_action(h: np.ndarray, p: int):
    """For a signed permutation h (h e_i = sign_i e_perm[i]) acting on V^(x)p: the image flat index and sign of
    every flat index (V* acts like V since signed permutations are orthogonal)."""
    d = h.shape[0]
    s = d**p
    digits = np.array(np.unravel_index(np.arange(s), (d,) * p)) if p else np.zeros((0, 1), int)
    strides = d ** np.arange(p - 1, -1, -1)
    perm = np.argmax(np.abs(h), axis=0)
    sign = h[perm, np.arange(d)]
    return (perm[digits] * strides[:, None]).sum(0), np.prod(sign[digits], axis=0)


def _path_orbit(group: Group, atoms, tol):
    """Signed orbits of the generators on index tuples (union-find via connected components)."""
    s = group.d ** len(atoms)
    # digits (p, s), per generator image + sign + two edge lists, the 2s-node union-find: all int64
    _check_alloc(group, atoms, s, len(atoms) + 6 * len(group.discrete_np) + 8, 8, "the orbit computation")
    src, dst = [], []
    idx = np.arange(s)
    for h in group.discrete_np:
        new, sg = _signed_perm_action(h, len(atoms))
        pos = sg > 0
        # node i = (i, +), node i + s = (i, -)
        src += [idx, idx + s]
        dst += [np.where(pos, new, new + s), np.where(pos, new + s, new)]
    if src:
        labels = _components(2 * s, np.concatenate(src), np.concatenate(dst))
    else:
        labels = np.arange(2 * s)
    lp, lm = labels[:s], labels[s:]
    alive = lp != lm
    rep_label = np.minimum(lp, lm)
    sign = np.where(lp == rep_label, 1.0, -1.0)
    idx = np.nonzero(alive)[0]
    uniq, first, inverse = np.unique(rep_label[idx], return_index=True, return_inverse=True)
    order = np.argsort(first)  # columns ordered by their first index
    col_of = np.empty_like(order)
    col_of[order] = np.arange(len(order))
    cols = col_of[inverse]
    _check_alloc(group, atoms, s, len(uniq), 8, f"its {s:,} x {len(uniq):,} basis ({len(uniq):,} orbits)")
    q = np.zeros((s, len(uniq)))
    q[idx, cols] = sign[idx]
    q /= np.sqrt(np.maximum((q != 0).sum(0), 1))
    return q, np.zeros(0), float("inf"), {"orbits": int(len(uniq))}


def _path_dense(group: Group, atoms, tol):
    c = dense_constraint(group, atoms)
    n_vecs, rel, gap = _null_from_svd(c, tol)
    if group.is_complex:
        q, _ = np.linalg.qr(n_vecs) if n_vecs.shape[1] else (n_vecs, None)
    else:
        q = n_vecs.real
    return q, rel, gap, {}


def _diagonaliser(mat: np.ndarray):
    """(eigenvalues, U, U^-1) when mat is diagonalisable with a well-conditioned eigenbasis, else None."""
    lam, u = np.linalg.eig(mat)
    try:
        uinv = np.linalg.inv(u)
    except np.linalg.LinAlgError:
        return None
    cond = np.linalg.norm(u, 2) * np.linalg.norm(uinv, 2)
    if not np.isfinite(cond) or cond > 1e6:
        return None
    if np.abs(u @ np.diag(lam) @ uinv - mat).max() > 1e-10 * max(1.0, np.abs(mat).max()):
        return None
    return lam, u, uinv


def _tuple_select(values_per_atom, combine: str, tol_abs: float):
    """Flat indices of tuples whose eigenvalue sum (or product) is 0 (or 1)."""
    if combine == "sum":
        w = np.zeros(1, complex)
        for v in values_per_atom:
            w = (w[:, None] + v[None, :]).ravel()
        return np.nonzero(np.abs(w) <= tol_abs)[0]
    w = np.ones(1, complex)
    for v in values_per_atom:
        w = (w[:, None] * v[None, :]).ravel()
    return np.nonzero(np.abs(w - 1.0) <= tol_abs)[0]


def _to_original(x: np.ndarray, atoms, u, uinv, d) -> np.ndarray:
    """Map coefficients in the eigenbasis (U for V, U^-T for V*) back to original coordinates."""
    return _apply_axes(x, [u if t == VEC else uinv.T for t in atoms], d)


def _conjugate_paired(lam: np.ndarray, u: np.ndarray):
    """Reorder a real matrix's eigenpairs so complex ones come in exact conjugate pairs.

    Returns (lam, U, pi) with U[:, pi[j]] == conj(U[:, j]), or None when the pairing is not clean.
    """
    scale = max(1.0, float(np.abs(lam).max()))
    real = np.nonzero(np.abs(lam.imag) <= 1e-12 * scale)[0]
    upper = np.nonzero(lam.imag > 1e-12 * scale)[0]
    lower = np.nonzero(lam.imag < -1e-12 * scale)[0]
    if len(upper) != len(lower):
        return None
    cols = [u[:, real].real.astype(complex), u[:, upper], u[:, upper].conj()]
    lams = [lam[real].real.astype(complex), lam[upper], lam[upper].conj()]
    nr, nu = len(real), len(upper)
    pi = np.concatenate([np.arange(nr), nr + nu + np.arange(nu), nr + np.arange(nu)])
    return np.concatenate(lams), np.concatenate(cols, axis=1), pi


def _path_weights(group: Group, atoms, tol):
    """Zero-weight restriction for groups with a Lie algebra (see module docstring).

    For real groups the eigenbasis is conjugation-paired, so the restricted problem is turned into an
    equivalent real symmetric one (4x cheaper than complex) whose null vectors map back to real vectors.
    """
    import scipy.linalg  # lazy: the dense and orbit paths need numpy only
    import scipy.sparse as sp

    d, p = group.d, len(atoms)
    s = d**p
    lie = _normalised_lie(group)
    if not len(lie):
        return "every Lie generator is zero"
    rng = np.random.default_rng(defaults.SOLVER_SEED)
    h = np.tensordot(rng.standard_normal(len(lie)), lie, axes=1)
    lam, u = np.linalg.eig(h)
    real_group = not group.is_complex
    pi = None
    if real_group:
        paired = _conjugate_paired(lam, u)
        if paired is None:
            return None
        lam, u, pi = paired
    try:
        uinv = np.linalg.inv(u)
    except np.linalg.LinAlgError:
        return None
    cond = float(np.linalg.norm(u, 2) * np.linalg.norm(uinv, 2))
    if not np.isfinite(cond) or cond > 1e6 or np.abs(u @ np.diag(lam) @ uinv - h).max() > 1e-10:
        return None  # not (well) diagonalisable: let another path handle it
    scale = max(float(np.abs(lam).max()), 1e-300) * max(p, 1)
    zero = _tuple_select([lam if t == VEC else -lam for t in atoms], "sum", 1e-8 * scale)
    m = len(zero)
    if m > defaults.DENSE_FALLBACK_MAX_DIM:
        return f"{m:,} zero-weight index tuples, more than its limit of {defaults.DENSE_FALLBACK_MAX_DIM:,}"
    info = {"zero_weight": int(m), "cond_U": cond}
    if m == 0:
        return np.zeros((s, 0)), np.zeros(0), float("inf"), info
    digits = np.array(np.unravel_index(zero, (d,) * p))
    strides = d ** np.arange(p - 1, -1, -1)
    rows, cols, vals = [], [], []
    col_ids = np.broadcast_to(np.arange(m), (d, m))
    jd = np.arange(d)[:, None]
    for i, a in enumerate(lie):
        at = uinv @ a @ u
        for ax, t in enumerate(atoms):
            mat = at if t == VEC else -at.T
            tk = digits[ax]
            v = mat[:, tk]  # (d, m): coefficient of e_{t[ax <- j]}
            r = zero[None, :] + (jd - tk[None, :]) * strides[ax] + i * s
            nz = np.abs(v) > 1e-14
            rows.append(r[nz])
            cols.append(col_ids[nz])
            vals.append(v[nz])
    c = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(lie) * s, m))
    if real_group:
        # unitary T: pairs (t, pi t) -> (e_t + e_pit)/sqrt2, i(e_t - e_pit)/sqrt2; fixed points -> e_t
        pos = np.full(s, -1)
        pos[zero] = np.arange(m)
        partner = pos[(pi[digits] * strides[:, None]).sum(0)]
        if np.any(partner < 0):
            return None
        me = np.arange(m)
        fixed = partner == me
        lo = me < partner
        a_idx, b_idx = me[lo], partner[lo]
        h2 = 1 / np.sqrt(2)
        t_rows = np.concatenate([me[fixed], a_idx, b_idx, a_idx, b_idx])
        t_cols = np.concatenate([me[fixed], a_idx, a_idx, b_idx, b_idx])
        t_vals = np.concatenate([np.ones(fixed.sum()), np.full(lo.sum(), h2), np.full(lo.sum(), h2),
                                 np.full(lo.sum(), 1j * h2), np.full(lo.sum(), -1j * h2)]).astype(complex)
        tmat = sp.csr_matrix((t_vals, (t_rows, t_cols)), shape=(m, m))
        ct = c @ tmat
        gram = (ct.conj().T @ ct).toarray().real
    else:
        gram = (c.conj().T @ c).toarray()
    evals, evecs = scipy.linalg.eigh(gram, overwrite_a=True, check_finite=False, driver="evr")
    sig = np.sqrt(np.clip(evals, 0, None))
    # generators are normalised, so non-zero singular values are O(1): an all-zero constraint is all null
    top = max(float(sig.max()), 1.0)
    tol_eff = max(tol, 1e-7)  # sqrt of the Gram's eigenvalues cannot resolve singular values below ~1e-8
    r = int((sig <= tol_eff * top).sum())
    if r:  # the null vectors' true singular values ||C v||, not the Gram's round-off floor of ~1e-8
        sig = sig.copy()
        sig[:r] = np.sort(np.linalg.norm((ct if real_group else c) @ evecs[:, :r], axis=0))
    rel, gap = _spectrum(sig, r)
    coeff = evecs[:, :r]
    if real_group:
        coeff = tmat @ coeff
    _check_alloc(group, atoms, s, r, 16, f"its {s:,} x {r:,} basis")
    x = np.zeros((s, r), complex)
    x[zero] = coeff
    qc = _to_original(x, atoms, u, uinv, d)
    if real_group:
        if r and np.abs(qc.imag).max() > 1e-8 * np.abs(qc.real).max():
            return None
        qc = qc.real
    q, _ = np.linalg.qr(qc) if r else (qc, None)
    return q, rel, gap, info


def _path_eigen1(group: Group, atoms, tol):
    """Eigenvalue-1 restriction of one diagonalisable discrete generator (finite, non-permutation groups)."""
    d, p = group.d, len(atoms)
    s = d**p
    for gi, h in enumerate(group.discrete_np):
        diag = _diagonaliser(h)
        if diag is not None:
            break
    else:
        return None
    lam, u, uinv = diag
    keep = _tuple_select([lam if t == VEC else 1.0 / lam for t in atoms], "prod", 1e-8)
    m = len(keep)
    if m > defaults.DENSE_FALLBACK_MAX_DIM:
        return f"{m:,} eigenvalue-1 index tuples, more than its limit of {defaults.DENSE_FALLBACK_MAX_DIM:,}"
    _check_alloc(group, atoms, s, m, 16, f"its {s:,} x {m:,} eigenvalue-1 basis")
    x = np.zeros((s, m), complex)
    x[keep, np.arange(m)] = 1.0
    qc = _to_original(x, atoms, u, uinv, d)
    if group.is_complex:
        q, _ = np.linalg.qr(qc) if m else (qc, None)
    else:
        q = _orthonormal_real_span(qc, m)
        if q is None:
            return None
    return q, np.zeros(0), float("inf"), {"eigen1": int(m), "skip_generator": gi}


#: Largest group order for which the group-average path sums over all elements
AVERAGE_MAX_ORDER = 2048


def _path_average(group: Group, atoms, tol):
    """Finite groups: the range of the exact projector P = (1/|G|) sum_g rho(g) on the block, from P applied to
    random vectors; its dimension is known in advance from the characters, (1/|G|) sum_g prod_t tr(g_t).

    For a small group on a large space (D(5) as 50 copies of its 2-d rep: 2500 invariants of Hom(V, V), d = 100)
    the eigenvalue-1 restriction has too many index tuples and the dense fallback and LOBPCG are far slower."""
    if len(group.lie_np) or not len(group.discrete_np) or group.is_complex:
        return None
    try:
        order = group.order
    except Exception:  # noqa: BLE001  (an unusual closure failure: this path just does not apply)
        order = None
    if order is None or order > AVERAGE_MAX_ORDER:
        return f"needs an enumerable group of at most {AVERAGE_MAX_ORDER} elements"
    d, p = group.d, len(atoms)
    s = d**p
    els = np.asarray(group.elements(), dtype=np.float64)
    mats = [[_atom_disc(g, t) for t in atoms] for g in els]
    chars = [np.prod([np.trace(m) for m in ms]) for ms in mats]
    r = int(round(float(np.mean(chars))))
    if r < 0 or abs(float(np.mean(chars)) - r) > 1e-6 * max(1.0, abs(r)):
        return f"the character average {float(np.mean(chars)):.6g} is not an integer (inexact generators?)"
    if r == 0:
        return np.zeros((s, 0)), np.zeros(0), float("inf"), {"average": 0, "order": order}
    if r > s:
        return f"the character dimension {r} exceeds the block size {s} (inexact generators?)"
    _check_alloc(group, atoms, s, 3 * r, 8, f"the group-average path's {r} vectors")
    # P x for r random vectors spans the whole invariant space (rank r with probability 1); its QR is the basis
    x = np.random.default_rng(defaults.SOLVER_SEED).standard_normal((s, r))
    y = np.zeros_like(x)
    for ms in mats:
        y += _apply_axes(x, ms, d)
    y /= order
    q, rmat = np.linalg.qr(y)
    diag = np.abs(np.diag(rmat))
    if diag.min() <= 1e-10 * diag.max():
        return "the averaged random vectors are numerically rank-deficient"
    return q, np.zeros(0), float("inf"), {"average": r, "order": order}


#: LOBPCG iterations of the short run that decides whether a block holds only null vectors (see _path_iterative)
_ITERATIVE_PROBE_ITERS = 60


def _path_iterative(group: Group, atoms, tol):
    """Matrix-free LOBPCG for the smallest eigenpairs of M = sum C_i^H C_i, growing the block until a gap."""
    from scipy.sparse.linalg import LinearOperator, lobpcg

    d, p = group.d, len(atoms)
    s = d**p
    lie = _normalised_lie(group)
    disc = group.discrete_np
    dtype = np.complex128 if group.is_complex else np.float64
    lie_m = [[_atom_lie(a, t) for t in atoms] for a in lie]
    lie_mh = [[m.conj().T for m in ms] for ms in lie_m]
    disc_m = [[_atom_disc(h, t) for t in atoms] for h in disc]
    disc_mh = [[m.conj().T for m in ms] for ms in disc_m]

    def matmat(x):
        x = np.asarray(x, dtype=dtype).reshape(s, -1)
        out = np.zeros_like(x)
        for ms, mhs in zip(lie_m, lie_mh):
            out += _apply_kron_sum(_apply_kron_sum(x, ms, d), mhs, d)
        for ms, mhs in zip(disc_m, disc_mh):
            y = _apply_axes(x, ms, d) - x
            out += _apply_axes(y, mhs, d) - y
        return out

    op = LinearOperator((s, s), matvec=matmat, matmat=matmat, dtype=dtype)
    rng = np.random.default_rng(defaults.SOLVER_SEED)
    block = min(16, s)
    top = 4.0 * (len(lie) * p * p + len(disc) * 4)  # crude upper bound of ||M|| for scaling
    thr = max(tol, 1e-6) * np.sqrt(top)
    warm = None
    while True:
        if block > ITERATIVE_MAX_BLOCK and block < s:
            raise BasisTooLargeError(
                f"{_block_label(group, atoms)} has at least {block // 2} invariant vectors, as many as the "
                f"iterative solver finds (used when no structured path applies; softsym.defaults.ITERATIVE_MAX_BLOCK = "
                f"{ITERATIVE_MAX_BLOCK}). Use fewer tensor factors"
            )
        _check_alloc(group, atoms, s, 12 * block, np.dtype(dtype).itemsize, f"the iterative solver's {block} vectors")
        x0 = rng.standard_normal((s, block)).astype(dtype)
        if warm is not None:  # keep the null vectors already found: the larger block starts from them
            x0[:, :warm.shape[1]] = warm
        # A short run first: it cannot overcount null vectors (unconverged ones have larger Ritz values), so when
        # every vector of the block is already null the block doubles without the long run. That long run rarely
        # reaches 1e-12 on a degenerate null space and then takes all its iterations (a nilpotent algebra on
        # V**8, whose invariants outnumber any block, spent minutes in them before being refused).
        for maxiter in (_ITERATIVE_PROBE_ITERS, 2000):
            with warnings.catch_warnings():  # lobpcg warns when 1e-12 is not reached; the residual check decides
                warnings.simplefilter("ignore")
                try:
                    evals, evecs = lobpcg(op, x0, largest=False, tol=1e-12, maxiter=maxiter)
                except (ValueError, np.linalg.LinAlgError) as exc:  # e.g. "eigh has failed in lobpcg postprocessing"
                    return f"LOBPCG failed ({exc})"
            sig = np.sqrt(np.clip(evals, 0, None))
            r = int((sig <= thr).sum())
            if r >= block and block < s:
                break
            x0 = evecs  # refine from where the short run stopped
        if r < block or block >= s:
            break
        warm = evecs
        block = min(2 * block, s)
    order = np.argsort(sig)
    q = evecs[:, order[:r]]
    q, _ = np.linalg.qr(q) if r else (q, None)
    if not group.is_complex:
        q = _orthonormal_real_span(q.astype(complex), r)
        if q is None:
            raise SolverError("iterative solver produced a basis that is not closed under conjugation")
    rel, gap = _spectrum(sig / np.sqrt(top), r)
    return q, rel, gap, {"block": block}


# ---------------------------------------------------------------------------------------------- driver
def _loose_tol_hint(tol: float) -> str:
    """A hint when the user's tol, not the generators, is the likely cause of residual failures."""
    if tol <= 100 * defaults.SOLVER_TOL:
        return ""
    return (f". Or the tol is too loose: tol={tol:g} accepts vectors far from invariant (default "
            f"{defaults.SOLVER_TOL:g}); try the default")


def solve_block(group: Group, atoms: Tuple[int, ...], tol: Optional[float] = None) -> BlockSolution:
    """Solve the invariant subspace of the tensor block ``atoms`` (0 = V, 1 = V*) of ``group``."""
    if tol is None:
        tol = defaults.SOLVER_TOL
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating, np.integer)) or not (0 < tol < 1):
        raise SolverError(f"tol must be a number in (0, 1), got {tol!r}: it is a relative singular-value threshold "
                          f"(default {defaults.SOLVER_TOL:g})")
    tol = float(tol)
    t0 = time.perf_counter()
    atoms = canonical_atoms(group, tuple(atoms))
    s = group.d ** len(atoms)
    # every path needs at least the block's index digits ((p, s) int64) and a few length-s arrays
    _check_alloc(group, atoms, s, len(atoms) + 4, 8, "indexing its entries")
    has_lie, has_disc = len(group.lie_np) > 0, len(group.discrete_np) > 0
    if not atoms:  # the scalar block is invariant under everything
        q = np.ones((1, 1), dtype=np.complex128 if group.is_complex else np.float64)
        return BlockSolution(q, "trivial", np.zeros(0), float("inf"), 0.0, time.perf_counter() - t0)
    candidates = []
    if not has_lie and not has_disc:
        candidates.append(("trivial", _path_trivial, False))
    elif group.is_signed_permutation:
        candidates.append(("orbit", _path_orbit, False))
    if s <= defaults.DENSE_MAX_DIM:
        candidates.append(("dense", _path_dense, False))
    if has_lie:
        candidates.append(("weights", _path_weights, True))
    elif has_disc:  # the exact average first (small finite groups), then one generator's eigenvalue-1 space
        candidates.append(("average", _path_average, False))
        candidates.append(("eigen1", _path_eigen1, True))
    if s <= defaults.DENSE_FALLBACK_MAX_DIM:
        candidates.append(("dense", _path_dense, False))
    candidates.append(("iterative", _path_iterative, True))

    tried = []
    rejected = []  # (path, dim, residual) of bases refused for their residual
    seen = set()
    for name, fn, needs_discrete in candidates:
        if name in seen:
            continue
        seen.add(name)
        if name == "iterative" and s > ITERATIVE_MAX_DIM:
            raise BasisTooLargeError(
                f"{_block_label(group, atoms)} is too large to solve: "
                f"{'; '.join(tried) or 'no structured path applies'}; the iterative fallback takes blocks of at most "
                f"{ITERATIVE_MAX_DIM:,} dims. Use fewer tensor factors (e.g. split V**k into smaller blocks)"
            )
        out = fn(group, atoms, tol)
        if out is None or isinstance(out, str):  # a str says why the path does not apply
            tried.append(f"{name}: {out or 'not applicable'}")
            continue
        q, rel, gap, info = out
        if needs_discrete and has_disc and q.shape[1]:
            skip = info.get("skip_generator", -1)
            q, disc_spec = _impose_discrete(group, atoms, q, tol, skip=skip)
            if disc_spec is not None:
                info["discrete_gap"] = disc_spec[1]
        residual = block_residual(group, atoms, q)
        if residual <= defaults.RESIDUAL_TOL or name == "iterative" and residual <= 1e3 * defaults.RESIDUAL_TOL:
            lost = [(n, k, r) for n, k, r in rejected if k > q.shape[1]]
            if lost:  # never trade vectors that were nearly invariant for a silently smaller basis
                n0, k0, r0 = lost[0]
                raise SolverError(
                    f"{_block_label(group, atoms)}: the {n0} path found {k0} nearly invariant vectors (residual "
                    f"{r0:.1e}, above softsym.defaults.RESIDUAL_TOL = {defaults.RESIDUAL_TOL:g}) but the {name} path "
                    f"only {q.shape[1]}: the generators look inexact (float32 or rounded matrices?). Give them in "
                    f"float64 to full precision, or, if they are only accurate to ~{r0:.0e}, raise "
                    "softsym.defaults.RESIDUAL_TOL above that residual" + _loose_tol_hint(tol)
                )
            sol = BlockSolution(np.ascontiguousarray(q), name, rel, gap, residual, time.perf_counter() - t0, info)
            log.debug("solved %s block %s: dim %d via %s in %.3fs", group.name, atoms, sol.dim, name, sol.seconds)
            return sol
        tried.append(f"{name}: residual {residual:.2e}")
        rejected.append((name, int(q.shape[1]), float(residual)))
        log.info("path %s for %s %s gave residual %.2e; falling back", name, group.name, atoms, residual)
    raise SolverError(
        f"no solver path produced an equivariant basis for {group.name} on a {s}-dim tensor block "
        f"({'; '.join(tried)}); "
        + (f"the best basis missed softsym.defaults.RESIDUAL_TOL = {defaults.RESIDUAL_TOL:g} by "
           f"{min(r for _, _, r in rejected):.1e}: inexact generators (float32 or rounded matrices?) should be given "
           "in float64 to full precision, or RESIDUAL_TOL raised above that residual" + _loose_tol_hint(tol)
           if rejected else
           f"check that the generators form a group, or try another tol (now {tol:g}; default "
           f"{defaults.SOLVER_TOL:g})")
    )
