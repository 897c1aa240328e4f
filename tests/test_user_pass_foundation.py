"""An adversarial user's pass over the foundation: groups, rep algebra, the solver, the cache and `softsym solve`.

Every test pins a bug that was found and fixed (values, error types and message fragments), plus a few brute-force
dimension checks: the invariant subspace computed HERE as the dense null space of the stacked constraints
[drho(A_i); rho(h_j) - I], built from the rep's own operators, against `equivariant_basis(...).dim`.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

import softsym as ss
from softsym import Hom, T, V, V0


# ============================================================================================ brute force
def _brute_dim(rep) -> int:
    """Dense null-space dimension of the stacked constraint of ``rep`` (small reps only)."""
    G = rep.group
    n = rep.size
    rows = [rep.drho_dense(a).numpy() for a in G.lie_algebra]
    rows += [rep.rho_dense(h).numpy() - np.eye(n) for h in G.discrete_generators]
    if not rows:
        return n
    c = np.concatenate(rows)
    sig = np.linalg.svd(c, compute_uv=False)
    return int((sig <= 1e-9 * max(1.0, sig.max())).sum()) + max(0, n - len(sig))


def _assert_basis_ok(rep, dim):
    basis = ss.equivariant_basis(rep)
    assert basis.dim == dim
    q = basis.Q
    assert q.dtype in (torch.float64, torch.complex128)
    assert torch.allclose(q.conj().T @ q, torch.eye(dim, dtype=q.dtype), atol=1e-10)
    G = rep.group
    for a in G.lie_algebra:
        assert rep.drho(a).apply(q.T).abs().max() <= 1e-9 * max(1.0, float(a.abs().max()))
    for h in G.discrete_generators:
        assert (rep.rho(h).apply(q.T) - q.T).abs().max() <= 1e-9


_LZ = ss.Embed(ss.SO(2), "z").lie_np
_RX = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # quarter turn about x
_P = np.array([[2.0, 1, 0], [0, 1, 0], [0, 0.5, 1]])  # a non-orthogonal change of basis


@pytest.mark.parametrize("make_group,spec,expected", [
    # SO(2)_z and a quarter turn about x generate SO(3): 1, 1 (epsilon), 3 invariants
    (lambda: ss.Group(lie_algebra=_LZ, discrete_generators=_RX[None]), "V**2", 1),
    (lambda: ss.Group(lie_algebra=_LZ, discrete_generators=_RX[None]), "V**3", 1),
    (lambda: ss.Group(lie_algebra=_LZ, discrete_generators=_RX[None]), "V**4", 3),
    # O(3) written in a skewed basis: V* differs from V, the metric lives in T(0,2)
    (lambda: ss.Group(lie_algebra=_P @ ss.SO(3).lie_np @ np.linalg.inv(_P),
                      discrete_generators=(_P @ np.diag([-1.0, 1, 1]) @ np.linalg.inv(_P))[None]), "T(0,2)", 1),
    (lambda: ss.Group(lie_algebra=_P @ ss.SO(3).lie_np @ np.linalg.inv(_P),
                      discrete_generators=(_P @ np.diag([-1.0, 1, 1]) @ np.linalg.inv(_P))[None]), "V**2", 1),
    (lambda: ss.Group(lie_algebra=_P @ ss.SO(3).lie_np @ np.linalg.inv(_P),
                      discrete_generators=(_P @ np.diag([-1.0, 1, 1]) @ np.linalg.inv(_P))[None]), "T(2,2)", 3),
    # d = 1 groups: x -> -x (Z2) and x -> e^t x (scaling)
    (lambda: ss.Group(discrete_generators=[[[-1.0]]]), "V+V**2+V**3", 1),
    (lambda: ss.Group(lie_algebra=[[[1.0]]]), "T(2,2)+V**2", 1),
    # SU(2) with the central i*I: V**4 keeps 2 of SU(2)'s invariants
    (lambda: ss.Group(lie_algebra=ss.SU(2).lie_np, discrete_generators=(1j * np.eye(2))[None]), "V**4", 2),
    (lambda: ss.group("(O(2)*S(2))@[0,1,2,3]:5"), "V**2", 3),
    (lambda: ss.group("SO(1,3)*S(2)"), "V**2", 2),
    (lambda: ss.group("D(7)@z"), "V**3", 4),
    # integer generators
    (lambda: ss.Group(lie_algebra=[[[0, -1], [1, 0]]]), "V**4", 6),
])
def test_dims_against_brute_force_null_space(make_group, spec, expected):
    G = make_group()
    rep = ss.rep(spec, G)
    assert _brute_dim(rep) == expected
    _assert_basis_ok(rep, expected)


# ============================================================================================ groups
def test_group_dimension_read_off_empty_or_other_generator_set():
    """Group(lie_algebra=[], discrete_generators=[I]) and Group(lie_algebra=zeros((0,2,2))) raised 'cannot infer the
    dimension'; a bool d raised a bare TypeError; a ragged object array said 'cannot infer the dimension'."""
    assert ss.Group(lie_algebra=[], discrete_generators=[np.eye(2)]).d == 2
    assert ss.Group(lie_algebra=np.zeros((0, 2, 2))).d == 2
    assert ss.Group(discrete_generators=np.zeros((0, 3, 3))).d == 3
    with pytest.raises(ss.GroupError, match="positive integer"):
        ss.Group(d=True)
    with pytest.raises(ss.GroupError, match="ragged"):
        ss.Group(discrete_generators=np.array([np.eye(2), np.eye(3)], dtype=object))


@pytest.mark.parametrize("make", [lambda: ss.S(True), lambda: ss.Z(True), lambda: ss.C(True), lambda: ss.D(True),
                                  lambda: ss.Trivial(True)])
def test_bool_group_arguments_refused(make):
    """S(True) was S(1), D(True) was D(1), ... while SO(True) was already refused."""
    with pytest.raises(ss.GroupError, match="integer"):
        make()


@pytest.mark.parametrize("spec", ["O(100000)", "SO(5000)", "S(100000)", "Z(1000000)", "Signs(2000)",
                                  "O(99999999999999999999)"])
def test_huge_groups_refused_before_allocating(spec):
    """These allocated their generators first (MemoryError for 74 GB .. 7 TB, ValueError for the 20-digit n)."""
    t0 = time.perf_counter()
    with pytest.raises(ss.GroupError, match="GB"):
        ss.group(spec)
    assert time.perf_counter() - t0 < 10.0  # hang guard: allocating first took minutes or ran out of memory


def test_huge_products_and_embeddings_refused():
    with pytest.raises(ss.GroupError, match="GB"):
        ss.O(60) * ss.O(60)
    with pytest.raises(ss.GroupError, match="GB"):
        ss.Embed(ss.O(2), (0, 1), 100000)


def test_permutation_group_input_validation():
    """PermutationGroup(5) raised TypeError; float index arrays raised IndexError."""
    with pytest.raises(ss.GroupError, match="list of permutations"):
        ss.PermutationGroup(5)
    assert ss.PermutationGroup([[1.0, 0.0, 2.0]]).order == 2
    with pytest.raises(ss.GroupError, match="integer indices"):
        ss.PermutationGroup([[0.5, 1.0]])
    with pytest.raises(ss.GroupError, match="permutation matrices"):
        ss.PermutationGroup([2 * np.eye(2)])


def test_finite_group_refuses_infinite_order_generators():
    """FiniteGroup([[[2.0]]]) was accepted, declared compact, and sampled 2^k for random k."""
    with pytest.raises(ss.GroupError, match="infinite order"):
        ss.FiniteGroup([[[2.0]]])
    with pytest.raises(ss.GroupError, match="infinite order"):
        ss.FiniteGroup([np.array([[1.0, 1.0], [0.0, 1.0]]) * 1.5])
    # a finite group in a skewed (non-orthogonal) basis is fine
    rot = np.array([[np.cos(2 * np.pi / 3), -np.sin(2 * np.pi / 3)], [np.sin(2 * np.pi / 3), np.cos(2 * np.pi / 3)]])
    P = np.array([[1.0, 2.0], [0.0, 1.0]])
    G = ss.FiniteGroup((P @ rot @ np.linalg.inv(P))[None])
    assert G.order == 3 and G.is_compact


def test_embed_coordinate_validation():
    """Float coordinates were truncated ((0.5, 1) -> (0, 1)); an int raised TypeError; '@z' with d=4 was named
    'O(2)@z' although it acts on R^4 (a different group with the same name)."""
    with pytest.raises(ss.GroupError, match="integers"):
        ss.Embed(ss.O(2), (0.5, 1), 3)
    with pytest.raises(ss.GroupError, match="sequence"):
        ss.Embed(ss.O(2), 3, 3)
    with pytest.raises(ss.GroupError, match="R\\^3, not R\\^4"):
        ss.Embed(ss.O(2), "z", 4)
    assert ss.Embed(ss.O(2), "z", 3) == ss.group("O(2)@z")


def test_exp_validates_shape_and_dtype():
    """SO(3).exp accepted a 2x2 matrix and raised a bare RuntimeError on integer input."""
    G = ss.SO(3)
    with pytest.raises(ss.GroupError, match=r"\(\.\.\., 3, 3\)"):
        G.exp(np.zeros((2, 2)))
    e = G.exp(np.zeros((3, 3), dtype=int))
    assert e.dtype == torch.float64 and torch.equal(e, torch.eye(3, dtype=torch.float64))
    quarter = G.exp(np.pi / 2 * G.lie_algebra[0])
    assert torch.allclose(quarter @ quarter.T, torch.eye(3, dtype=torch.float64), atol=1e-14)


def test_order_and_elements_of_products_and_embeddings_of_finite_groups():
    """S(2)*S(3) and D(6)@z are finite but had no .order / .elements()."""
    assert ss.group("S(2)*S(3)").order == 12
    assert ss.group("D(6)@z").order == 12
    assert len(ss.group("Signs(2)*S(2)").elements()) == 8
    assert ss.group("SO(2)*S(3)").order is None
    with pytest.raises(ss.GroupError, match="infinitely many"):
        ss.O(3).elements()


def test_group_key_ignores_negative_zero():
    a = np.array([[[0.0, -1.0], [1.0, 0.0]]])
    b = np.array([[[-0.0, -1.0], [1.0, -0.0]]])
    assert ss.Group(lie_algebra=a) == ss.Group(lie_algebra=b)
    assert hash(ss.Group(lie_algebra=b)) == hash(ss.SO(2))


def test_indefinite_signature_hint():
    with pytest.raises(ss.GroupError, match=r"O\(1,3\).*softsym.Group\(lie_algebra"):
        ss.group("O(3,1)")


def test_sample_reproducible_and_in_group():
    eta = np.diag([1.0, -1, -1, -1])
    for spec in ("O(1,3)", "SO+(1,3)"):
        G = ss.group(spec)
        a, b = G.sample(6, seed=7), G.sample(6, seed=7)
        assert torch.equal(a, b)
        g = a.numpy()
        assert np.abs(np.einsum("nji,jk,nkl->nil", g, eta, g) - eta).max() < 1e-12
    assert (ss.group("SO+(1,3)").sample(50, seed=0)[:, 0, 0] > 0).all()


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(n=True), "non-negative integer n"),          # was 1 sample
    (dict(n=2, seed=-1), "seed"),                      # was numpy's bare ValueError
    (dict(n=2, seed=1.5), "seed"),                     # was a bare TypeError
    (dict(n=2, spread=float("nan")), "spread"),        # was NaN matrices
    (dict(n=2, spread=-1.0), "spread"),                # was silently |spread|
    (dict(n=2, generator=3), "numpy.random.Generator"),  # was AttributeError deep in the sampler
])
def test_sample_argument_validation(kwargs, fragment):
    with pytest.raises(ss.GroupError, match=fragment):
        ss.SL(2).sample(**kwargs)


def test_sample_accepts_numpy_seeds():
    G = ss.SL(2)
    assert torch.equal(G.sample(3, seed=np.int64(4)), G.sample(3, seed=4))
    assert G.sample(2, seed=[1, 2]).shape == (2, 2, 2)
    g = G.sample(4, seed=0, spread=0).numpy()  # spread 0: only the compact part K, orthogonal
    assert np.abs(np.einsum("nji,njk->nik", g, g) - np.eye(2)).max() < 1e-12


# ============================================================================================ reps
@pytest.mark.parametrize("make", [
    lambda: V * V.T, lambda: V.T * V, lambda: V.T ** 2 + V, lambda: 2 * (V ** 2) + 3 * V.T,
    lambda: Hom(V + V.T, V ** 2), lambda: T(1, 2), lambda: Hom(V0 + V, V.T),
])
def test_rep_repr_parses_back(make):
    """repr writes '⊗' (and 'V*⊗V' for a dual first factor), which the parser refused."""
    rep = make()
    back = ss.parse_rep(repr(rep))
    assert repr(back) == repr(rep)
    G = ss.SL(3)
    assert back(G) == rep(G)


def test_unicode_sum_and_star_at_still_refused():
    assert repr(ss.parse_rep("V⊕V*")) == "V+V*"
    with pytest.raises(ss.RepParseError):
        ss.parse_rep("V*@V")


def test_tensor_power_and_T_argument_types():
    """V**True was V, T(True) was V and T(np.int64(2)) was refused while V**np.int64(2) worked."""
    with pytest.raises(ss.RepError):
        V ** True
    with pytest.raises(ss.RepError):
        T(True)
    assert T(np.int64(2))(ss.O(3)).size == 9


def test_rho_apply_errors():
    """A 0-d input raised IndexError; a singular g for a rep with dual factors raised torch's LinAlgError."""
    G = ss.O(3)
    r = ss.rep("V*+V", G)
    with pytest.raises(ss.RepError, match="0-d"):
        r.rho(torch.eye(3)).apply(torch.tensor(1.0))
    with pytest.raises(ss.RepError, match="singular"):
        r.rho(torch.zeros(3, 3)).apply(torch.ones(6))
    # no dual factor: rho(g) needs no inverse
    assert torch.equal(ss.rep("V", G).rho(torch.zeros(3, 3)).apply(torch.ones(3)), torch.zeros(3, dtype=torch.float64))


def test_rho_dense_is_contiguous():
    """rho_dense returned a transposed view: torch.kron(rho_dense(g), ...) raised 'view size is not compatible'."""
    G = ss.SL(2)
    g = G.sample(1, seed=2)[0]
    a = (V + V0 + V.T)(G)
    b = (V ** 2 + 2 * V0)(G)
    ga, gb = a.rho_dense(g), b.rho_dense(g)
    assert ga.is_contiguous()
    expected = torch.kron(gb, torch.linalg.inv(ga).T)
    assert (Hom(a, b).rho_dense(g) - expected).abs().max() < 1e-13


def test_project_of_complex_vector_with_real_basis():
    """The imaginary part was discarded (with a torch warning)."""
    b = ss.equivariant_basis(ss.rep("V**2+V", "O(3)"))
    x = torch.randn(12, dtype=torch.float64) + 1j * torch.randn(12, dtype=torch.float64)
    p = b.project(x)
    assert p.dtype == torch.complex128
    q = b.Q.to(torch.complex128)
    assert (p - q @ (q.T @ x)).abs().max() < 1e-13


# ============================================================================================ solver
@pytest.mark.parametrize("tol", [2.0, float("inf"), float("nan"), True, "abc", 0.0, -1e-3])
def test_invalid_tol_refused(tol):
    """tol=2 / inf raised 'no solver path ... try a larger tol'; tol=True was 1.0; 'abc' raised ValueError."""
    with pytest.raises(ss.SolverError, match=r"\(0, 1\)"):
        ss.equivariant_basis(ss.rep("V**2", "O(3)"), tol=tol, cache=False)


@pytest.mark.parametrize("spec,rep,dim", [("O(3)", "V**2", 1), ("SO(3)", "V**3", 1), ("D(4)", "V**2", 1)])
def test_tiny_tol_does_not_lose_invariants(spec, rep, dim):
    """tol=1e-300 gave dim 0 on the dense path: the round-off singular values of exact invariants exceed it."""
    assert ss.equivariant_basis(ss.rep(rep, spec), tol=1e-300, cache=False).dim == dim


@pytest.mark.parametrize("spec,rep,fragment", [
    ("O(3)", "V**100", "one float64 vector"),                  # was MemoryError / OOM after 10 s
    ("O(3)", "10000000000V", "one float64 vector"),            # was MemoryError (74.5 GiB offsets)
    ("Trivial(3)", "V**9", "every vector is invariant"),        # was a 3 GB identity
    ("S(10)", "V**7", "orbit computation"),                    # was several GB of index arrays, then 70 GB
    ("O(3)", "V**10", "8,953 zero-weight index tuples"),       # was LOBPCG on 59049 dims for many minutes
])
def test_huge_reps_refused_quickly(spec, rep, fragment):
    t0 = time.perf_counter()
    with pytest.raises(ss.BasisTooLargeError, match=fragment) as exc:
        ss.equivariant_basis(ss.rep(rep, spec), cache=False)
    assert isinstance(exc.value, ss.SoftsymError)
    assert time.perf_counter() - t0 < 30.0  # hang guard: the old path ran for many minutes


def test_iterative_path_refuses_large_null_spaces(monkeypatch):
    """LOBPCG doubled its block without bound (a nilpotent algebra on V**8 ran for many minutes)."""
    from softsym.reps import solve

    monkeypatch.setattr(solve, "ITERATIVE_MAX_BLOCK", 8)
    n = np.zeros((1, 3, 3))
    n[0, 0, 1] = 1.0
    G = ss.Group(lie_algebra=n)
    with pytest.raises(ss.BasisTooLargeError, match="invariant vectors"):
        solve._path_iterative(G, (0, 0, 0, 0), 1e-6)
    # below the cap it still works: 5 invariants of V**2 (block 9 = whole space)
    q = solve._path_iterative(G, (0, 0), 1e-6)[0]
    assert q.shape == (9, 5)


# ============================================================================================ cache
def test_cache_location_that_is_a_file(tmp_path, monkeypatch):
    """`softsym cache clear` raised NotADirectoryError; `cache info` reported 0 entries as if all were fine."""
    from softsym.reps import cache

    f = tmp_path / "not-a-dir"
    f.write_text("x")
    monkeypatch.setenv("SOFTSYM_CACHE", str(f))
    monkeypatch.setattr(cache, "_warned", set())
    cache._memory.clear()
    with pytest.raises(ss.CacheError, match="not a directory"):
        cache.info()
    with pytest.raises(ss.CacheError, match="not a directory"):
        cache.clear()
    with pytest.warns(RuntimeWarning, match="not a directory"):
        b = ss.equivariant_basis(ss.rep("V**4", "O(3)"))
    assert b.dim == 3
    assert f.read_text() == "x"
    cache._memory.clear()


def test_cache_entry_of_wrong_shape_is_ignored(fresh_cache):
    """A hash-valid entry whose basis does not fit the block (foreign/damaged) was used as is."""
    from softsym.reps import cache
    from softsym.reps.block import BlockSolution, canonical_atoms

    G = ss.O(3)
    atoms = canonical_atoms(G, (0, 0))
    key = cache.block_key(G.key, atoms, ss.defaults.SOLVER_TOL)
    cache.store(key, BlockSolution(np.ones((4, 2)), "dense", np.zeros(0), float("inf"), 0.0))
    b = ss.equivariant_basis(ss.rep("V**2", G))
    assert b.dim == 1 and b.Q.shape == (9, 1)


# ============================================================================================ CLI
def _cli(argv, capsys):
    from softsym.cli import main

    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_solve_json_is_strict(capsys):
    """--json printed 'Infinity' for the gap, which strict JSON parsers (jq, JSON.parse) reject."""
    code, out, _ = _cli(["solve", "O(3)", "V**3", "--json", "--no-cache"], capsys)
    assert code == 0

    def refuse(c):
        raise ValueError(c)

    data = json.loads(out, parse_constant=refuse)
    assert data["dim"] == 0 and data["spectrum"]["V⊗V⊗V"]["gap"] == "inf"


@pytest.mark.parametrize("argv,fragment", [
    (["solve", "O(3)", "V**100"], "one float64 vector"),
    (["solve", "O(3)", "V", "--tol", "2"], "(0, 1)"),
    (["solve", "O(100000)", "V"], "GB"),
    (["solve", "O(3,1)", "V"], "another signature"),
])
def test_cli_errors_are_clean(argv, fragment, capsys):
    code, _, err = _cli(argv, capsys)
    assert code == 2
    assert "error:" in err and fragment in err and "Traceback" not in err


def test_cli_cache_commands_on_a_file(tmp_path, monkeypatch, capsys):
    f = tmp_path / "cachefile"
    f.write_text("x")
    monkeypatch.setenv("SOFTSYM_CACHE", str(f))
    for argv in (["cache", "info"], ["cache", "clear", "-y"]):
        code, _, err = _cli(argv, capsys)
        assert code == 2 and "not a directory" in err and "Traceback" not in err
