"""User pass over finite skeletons: large finite groups, fast refusals, honest errors, canonical names."""
import time

import numpy as np
import pytest

import softsym
from softsym.cli import main
from softsym.data import make_task
from softsym.errors import GroupError
from softsym.groups.finite import _element_key, _matrix_closure, _signed_permutation_closure
from softsym.groups.skeleton import finite_skeleton, skeleton_candidates
from softsym.models import build_model


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out + out.err


def _keys(els):
    return {_element_key(e) for e in els}


def test_large_finite_groups_are_their_own_skeleton():
    """Old: refused (more than 4096 elements) with 'has no discrete generators', though the doc says a finite
    group's skeleton is the group itself."""
    assert softsym.group("Skeleton(S(8))").order == 40320
    assert softsym.group("Skeleton(C(5000))").order == 5000
    assert softsym.group("Skeleton(S(7))").order == 5040
    assert skeleton_candidates(["S(7)"]) == []  # its own skeleton: nothing new


def test_skeleton_of_rubiks_cube_is_fast_and_samples_cube_moves():
    t0 = time.perf_counter()
    sk = softsym.group("Skeleton(RubiksCube)")
    x = sk.sample(4, seed=0).numpy()
    assert skeleton_candidates(["RubiksCube"]) == []
    assert time.perf_counter() - t0 < 20.0  # hang guard (normally well under a second)
    assert sk.name == "Skeleton(RubiksCube)" and sk.d == 48
    assert np.all((x == 0) | (x == 1)) and np.all(x.sum(1) == 1) and np.all(x.sum(2) == 1)  # permutations
    with pytest.raises(GroupError, match="cannot be enumerated"):
        sk.elements()
    assert softsym.equivariant_basis(softsym.rep("V", sk)).dim == 2  # corner and edge stickers


def test_skeleton_in_a_large_dimension_is_refused_fast():
    """Old: 5.6 s and ~700 MB of element matrices before giving up on O(3)*RubiksCube (R^144)."""
    g = softsym.group("O(3)*RubiksCube")
    t0 = time.perf_counter()
    assert finite_skeleton(g) is None
    assert time.perf_counter() - t0 < 20.0  # hang guard (normally well under a second)


def test_too_large_skeleton_error_says_so():
    """Old: 'O(13) has no discrete generators and no Lie generator whose half-turn has finite order' (false)."""
    with pytest.raises(GroupError, match="more than 4096 elements in R\\^13") as exc:
        softsym.group("Skeleton(O(13))")
    assert "no non-identity discrete generator" not in str(exc.value) and "Signs(n)" in str(exc.value)
    with pytest.raises(GroupError, match="SL\\(3\\) has no non-identity discrete generator"):
        softsym.group("Skeleton(SL(3))")
    with pytest.raises(GroupError, match="more than 4096"):
        finite_skeleton(softsym.O(13), strict=True)
    assert finite_skeleton(softsym.O(13)) is None


def test_skeleton_of_o12_is_all_axis_flips():
    t0 = time.perf_counter()
    sk = softsym.group("Skeleton(O(12))")
    assert sk.order == 4096 and _keys(sk.elements()) == _keys(softsym.Signs(12).elements())
    assert time.perf_counter() - t0 < 20.0  # hang guard (normally well under a second)


@pytest.mark.parametrize("spec", ["S(4)", "Signs(3)", "RubiksCube", "S(3)*Signs(2)", "D(4)"])
def test_signed_permutation_closure_equals_matrix_closure(spec):
    gens = softsym.group(spec).discrete_np
    fast, slow = _signed_permutation_closure(gens, 3000), _matrix_closure(gens, 3000)
    if slow is None:
        assert fast is None
    else:
        assert len(fast) == len(slow) and _keys(fast) == _keys(slow)
        assert np.array_equal(fast[0], np.eye(gens.shape[-1]))


def test_skeleton_names_are_canonical():
    """Old: 'Skeleton(o(3))' next to 'O(3)' in the model's candidates and every table."""
    assert softsym.group(" skeleton ( o(3) ) ").name == "Skeleton(O(3))"
    assert softsym.group("Skeleton(Lorentz)").name == "Skeleton(O(1,3))"
    assert [s for s, _ in skeleton_candidates(["o(3)", "o(2)@Z"])] == ["Skeleton(O(3))", "Skeleton(O(2)@z)"]
    assert [s for s, _ in skeleton_candidates(["o(3)", "O(3)"])] == ["Skeleton(O(3))"]  # one skeleton, once
    task = make_task("mixed-inertia:none", n_train=8, n_val=4, n_test=4, seed=0)
    m = build_model("soft", task, ch=8, num_layers=1, candidates=["o(3)", "O(2)@z"])
    assert list(m.candidates) == ["O(3)", "O(2)@z", "Skeleton(O(3))", "Skeleton(O(2)@z)"]  # canonical names
    assert m.spec["candidates"][2:] == ["Skeleton(O(3))", "Skeleton(O(2)@z)"]


def test_bad_arguments_raise_group_errors():
    """Old: a bare string was split into characters ('cannot parse group 'O''), a bad max_order a ValueError and
    None a TypeError."""
    with pytest.raises(GroupError, match="wrap it in a list"):
        skeleton_candidates("O(3)")
    with pytest.raises(GroupError, match="list of group specs"):
        skeleton_candidates(None)
    with pytest.raises(GroupError, match="positive integer"):
        finite_skeleton(softsym.O(3), max_order="x")
    with pytest.raises(GroupError, match="positive integer"):
        finite_skeleton(softsym.O(3), max_order=0)


def test_cli_solve_with_skeleton_specs(capsys):
    code, out = _run(["solve", "Skeleton(S(8))", "V"], capsys)
    assert code == 0 and "Skeleton(S(8))" in out and "basis dim 1" in out
    code, out = _run(["solve", "Skeleton(O(13))", "V"], capsys)
    assert code == 2 and "more than 4096" in out and "Traceback" not in out


def test_many_generators_stay_fast_and_small():
    """O(60) has 1770 half-turns: the signed-permutation closure forms their products in bounded chunks."""
    g = softsym.group("O(60)")
    t0 = time.perf_counter()
    assert finite_skeleton(g) is None  # 2^60 axis flips
    # a hang guard, not a timing test: enumerating 2^60 elements would never return (normally ~0.1 s)
    assert time.perf_counter() - t0 < 60.0


def test_infinite_discrete_group_has_no_skeleton():
    """Old: x -> 2x 'generated' a finite skeleton of 996 elements (powers of 2 until the keys overflowed)."""
    doubling = softsym.Group(discrete_generators=np.array([[[2.0]]]), name="Doubling")
    assert finite_skeleton(doubling) is None
    with pytest.raises(GroupError, match="infinitely many"):
        finite_skeleton(doubling, strict=True)
    flip = softsym.Group(discrete_generators=np.array([[[0.0, 1.0], [1.0, 0.0]]]), compact=False)
    assert finite_skeleton(flip).order == 2  # declared non-compact but finite: enumerated, kept
