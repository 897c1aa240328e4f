"""User-facing errors of the foundation: right class, helpful message, always a SoftsymError."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import softsym as ss
from softsym import Hom, T, V, V0
from softsym.reps.base import SumRep


def test_error_hierarchy():
    for cls in (ss.GroupError, ss.RepError, ss.RepParseError, ss.SolverError, ss.BasisTooLargeError,
                ss.CacheError, ss.ConfigError, ss.DataError, ss.ModelError):
        assert issubclass(cls, ss.SoftsymError)
    assert issubclass(ss.RepParseError, ss.RepError)
    assert issubclass(ss.SoftsymError, Exception)


# ================================================================================================ groups


@pytest.mark.parametrize("spec", ["Q(3)", "foo", "", "   ", "SO(3)*", "*SO(3)", "SO(3)**S(3)", "SO3", "SO(x)",
                                  "O(2)@w", "O(2)@[0,1", "SO(-1)", "Lorentzz"])
def test_unknown_group_string(spec):
    with pytest.raises(ss.GroupError) as exc:
        ss.group(spec)
    assert isinstance(exc.value, ss.SoftsymError)
    msg = str(exc.value)
    assert "Grammar" in msg and "Known groups" in msg, msg


@pytest.mark.parametrize("spec", ["Q(3)", "foo", ""])
def test_unknown_group_message_lists_grammar_and_known_groups(spec):
    with pytest.raises(ss.GroupError) as exc:
        ss.group(spec)
    msg = str(exc.value)
    assert "Grammar" in msg
    assert "Known groups" in msg
    for name in ("SO(n)", "O(1,3)", "Sp(2m)", "S(n)", "D(k)"):
        assert name in msg
    assert repr(spec) in msg  # the offending spec is quoted


@pytest.mark.parametrize("bad", [None, 3, 3.0, ["O(3)"]])
def test_group_spec_of_wrong_type(bad):
    with pytest.raises(ss.GroupError):
        ss.group(bad)


@pytest.mark.parametrize("spec", ["O(0)", "SO(0)", "SU(1)", "SL(1)", "Sp(3)", "S(0)", "Z(0)", "C(0)", "D(0)",
                                  "Trivial(0)", "Scaling(0)"])
def test_invalid_group_arguments(spec):
    with pytest.raises(ss.GroupError):
        ss.group(spec)


@pytest.mark.parametrize("ctor", [lambda: ss.SO(2.5), lambda: ss.O(True), lambda: ss.S("3"), lambda: ss.Sp(5)])
def test_invalid_group_constructor_arguments(ctor):
    with pytest.raises(ss.GroupError):
        ctor()


@pytest.mark.parametrize("make", [
    lambda: ss.Embed(ss.O(2), (0, 1, 2), 3),
    lambda: ss.Embed(ss.O(2), (0,), 3),
    lambda: ss.Embed(ss.SO(3), (0, 1), 3),
    lambda: ss.Embed(ss.O(2), (0, 3), 3),
    lambda: ss.Embed(ss.O(2), (1, 1), 3),
    lambda: ss.Embed(ss.O(3), "z"),
    lambda: ss.Embed(ss.O(2), "w"),
    lambda: ss.group("O(2)@[0,1,2]"),
    lambda: ss.group("SO(3)@[0,1]:4"),
    lambda: ss.group("SO(3)@[0,1,5]:4"),
])
def test_embed_dimension_mismatch(make):
    with pytest.raises(ss.GroupError) as exc:
        make()
    assert isinstance(exc.value, ss.SoftsymError)


def test_embed_mismatch_message_is_helpful():
    with pytest.raises(ss.GroupError, match=r"R\^2.*3 coordinates"):
        ss.Embed(ss.O(2), (0, 1, 2), 3)


@pytest.mark.parametrize("kwargs", [
    dict(lie_algebra=np.ones((1, 2, 3))),
    dict(lie_algebra=np.ones((2, 3))),
    dict(lie_algebra=np.ones((1, 1, 2, 2))),
    dict(discrete_generators=np.ones((1, 3, 2))),
    dict(lie_algebra=torch.ones(1, 2, 3, dtype=torch.float64)),
    dict(lie_algebra=np.zeros((1, 2, 2)), discrete_generators=np.eye(3)[None]),
    dict(lie_algebra=np.zeros((1, 2, 2)), d=3),
])
def test_non_square_or_mismatched_generators(kwargs):
    with pytest.raises(ss.GroupError):
        ss.Group(**kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(lie_algebra=np.full((1, 2, 2), np.nan)),
    dict(lie_algebra=np.array([[[0.0, np.nan], [0.0, 0.0]]])),
    dict(lie_algebra=torch.tensor([[[0.0, float("inf")], [0.0, 0.0]]], dtype=torch.float64)),
    dict(discrete_generators=np.array([[[np.nan, 0.0], [0.0, 1.0]]])),
    dict(lie_algebra=np.array([[[0.0, 1j * np.nan], [0.0, 0.0]]])),
])
def test_nan_or_inf_generators(kwargs):
    with pytest.raises(ss.GroupError, match="NaN"):
        ss.Group(**kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(discrete_generators=np.zeros((1, 2, 2))),  # singular
    dict(lie_algebra=np.array([[["a", "b"], ["c", "d"]]])),  # not numeric
    dict(),  # nothing to infer the dimension from
    dict(d=0),
])
def test_other_invalid_generators(kwargs):
    with pytest.raises(ss.GroupError):
        ss.Group(**kwargs)


def test_ragged_generators_raise_group_error():
    """Regression: Group.__init__ inferred d with np.asarray(mats).ndim before validation -> bare ValueError."""
    with pytest.raises(ss.GroupError):
        ss.Group(lie_algebra=[[[0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0, 2.0]]])
    with pytest.raises(ss.GroupError):
        ss.Group(discrete_generators=[[[1.0, 0.0], [0.0, 1.0]], [[1.0]]])
    with pytest.raises(ss.GroupError):
        ss.FiniteGroup([[[0.0, 1.0], [1.0]]])


@pytest.mark.parametrize("make", [
    lambda: ss.PermutationGroup([[0, 0, 1]]),
    lambda: ss.PermutationGroup([]),
    lambda: ss.PermutationGroup([[1, 0], [1, 2, 0]]),
    lambda: ss.PermutationGroup([np.array([[2.0, 0.0], [0.0, 1.0]])]),
    lambda: ss.PermutationGroup([np.zeros((2, 2, 2))]),
])
def test_invalid_permutation_groups(make):
    with pytest.raises(ss.GroupError):
        make()


def test_invalid_sample_count():
    for n in (-1, 2.5, "3"):
        with pytest.raises(ss.GroupError):
            ss.SO(3).sample(n)


# ================================================================================================ reps


def test_hom_of_reps_bound_to_different_groups():
    a, b = V(ss.O(3)), V(ss.SO(3))
    with pytest.raises(ss.RepError) as exc:
        Hom(a, b)
    assert isinstance(exc.value, ss.SoftsymError)
    assert "O(3)" in str(exc.value) and "SO(3)" in str(exc.value)
    with pytest.raises(ss.RepError):
        Hom(V(ss.O(2)), V(ss.group("O(2)@z")))  # different dimensions as well
    with pytest.raises(ss.RepError):
        ss.rep("V**2", "O(3)") + ss.rep("V", "O(2)@z")
    with pytest.raises(ss.RepError):
        T(2)(ss.O(3)).bind("SO(3)")


@pytest.mark.parametrize("make", [
    lambda: ss.rep("0V"),
    lambda: ss.rep("0*V"),
    lambda: ss.rep("0V", "O(3)"),
    lambda: SumRep.of([]),
    lambda: SumRep.of([(V, 0), (V0, 0)]),
    lambda: 0 * V,
    lambda: V(ss.O(3)) * 0,
])
def test_empty_rep(make):
    with pytest.raises(ss.RepError) as exc:
        make()
    assert isinstance(exc.value, ss.SoftsymError)


@pytest.mark.parametrize("text", ["V*2", "V***2", "VV", "V**", "", "5V0+", "(V", "V)", "T(1", "T(a)", "Hom(V)",
                                  "V**-1", "x", "V * * V", "V* *2", "V*@V", "3", "+V", "V+*", "V**2.5", "2 3 V"])
def test_ambiguous_or_malformed_rep_strings(text):
    with pytest.raises(ss.RepParseError) as exc:
        ss.parse_rep(text)
    msg = str(exc.value)
    assert "Grammar" in msg
    assert isinstance(exc.value, ss.RepError) and isinstance(exc.value, ss.SoftsymError)
    with pytest.raises(ss.RepParseError):
        ss.rep(text, "O(3)")


def test_ambiguity_messages_suggest_a_fix():
    with pytest.raises(ss.RepParseError, match=r"2\*R.*R\*\*2"):
        ss.parse_rep("V*2")
    with pytest.raises(ss.RepParseError, match=r"\(V\*\)\*\*2"):
        ss.parse_rep("V* *2")


@pytest.mark.parametrize("bad", [None, 3, ["V"]])
def test_rep_spec_of_wrong_type(bad):
    with pytest.raises(ss.RepParseError):
        ss.parse_rep(bad)


@pytest.mark.parametrize("make", [lambda: V**-1, lambda: V**1.5, lambda: T(-1), lambda: T(1, -2), lambda: T(1.0),
                                  lambda: Hom(1, V), lambda: Hom(V, "V"), lambda: V.size,
                                  lambda: (V + V0).components, lambda: V.rho(torch.eye(3))])
def test_invalid_rep_construction_or_unbound_use(make):
    with pytest.raises(ss.RepError):
        make()


@pytest.mark.parametrize("shape", [(4, 4), (3,), (3, 4), (2, 2, 3, 3), (2, 4, 4), ()])
def test_rho_and_drho_with_wrong_matrix_shape(shape):
    R = ss.rep("V**2+V0", "O(3)")
    m = torch.ones(shape, dtype=torch.float64)
    with pytest.raises(ss.RepError):
        R.rho(m)
    with pytest.raises(ss.RepError):
        R.drho(m)


def test_apply_with_wrong_vector_length_or_batch():
    R = ss.rep("V**2+V0", "O(3)")
    g = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ss.RepError):
        R.rho(g).apply(torch.ones(9, dtype=torch.float64))
    with pytest.raises(ss.RepError):
        R.rho(g) @ torch.ones(11, dtype=torch.float64)
    batch = torch.eye(3, dtype=torch.float64).expand(4, 3, 3)
    with pytest.raises(ss.RepError):
        R.rho(batch).apply(torch.ones(3, 10, dtype=torch.float64))  # batch of 4 matrices, 3 vectors
    with pytest.raises(ss.RepError):
        R.rho(batch).dense()


@pytest.mark.parametrize("n", [9, 11, 0])
def test_basis_methods_with_wrong_length(n):
    R = ss.rep("V**2+V0", "O(3)")
    b = ss.equivariant_basis(R)
    with pytest.raises(ss.RepError):
        b.project(torch.ones(n, dtype=torch.float64))
    with pytest.raises(ss.RepError):
        b.coefficients(torch.ones(3, n, dtype=torch.float64))
    with pytest.raises(ss.RepError):
        b.expand(torch.ones(b.dim + 1, dtype=torch.float64))
    with pytest.raises(ss.RepError):
        b.project(torch.tensor(1.0, dtype=torch.float64))


def test_equivariant_basis_argument_errors():
    with pytest.raises(ss.RepError):
        ss.equivariant_basis("V**2")
    with pytest.raises(ss.RepError):
        ss.equivariant_basis(V**2)  # unbound
    with pytest.raises(ss.SoftsymError):
        ss.equivariant_basis(ss.rep("V**2", "O(3)"), tol=-1.0, cache=False)


def test_basis_too_large_error_is_a_softsym_error(monkeypatch):
    b = ss.equivariant_basis(ss.rep("V**2+V0", "O(3)"))
    monkeypatch.setenv("SOFTSYM_MAX_DENSE_BYTES", "8")
    with pytest.raises(ss.BasisTooLargeError) as exc:
        b.Q
    assert isinstance(exc.value, ss.SoftsymError)
    assert "10 x 2" in str(exc.value)
    monkeypatch.setenv("SOFTSYM_MAX_DENSE_BYTES", "lots")
    with pytest.raises(ss.ConfigError):
        b.Q
