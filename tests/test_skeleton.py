"""Finite skeletons: discrete generators + half-turns of the Lie generators, as groups, specs and soft candidates."""
import numpy as np
import pytest
import torch

import softsym
from softsym.data import make_task
from softsym.data.synthetic import _mixed_inertia_targets
from softsym.errors import ConfigError, GroupError
from softsym.groups.skeleton import finite_skeleton, skeleton_candidates
from softsym.models import build_model


def _diag_set(g):
    els = np.asarray(g.elements())
    assert np.allclose(els, np.stack([np.diag(np.diag(e)) for e in els]), atol=0)  # diagonal, exactly
    return {tuple(np.diag(e).astype(int)) for e in els}


def _all_signs(n, det=None):
    import itertools

    out = set(itertools.product((1, -1), repeat=n))
    return out if det is None else {s for s in out if np.prod(s) == det}


def test_skeleton_of_orthogonal_groups_is_the_axis_flips():
    sk = softsym.group("Skeleton(O(3))")
    assert sk.order == 8 and sk.name == "Skeleton(O(3))"
    assert _diag_set(sk) == _all_signs(3) == _diag_set(softsym.Signs(3))
    assert _diag_set(softsym.group("Skeleton(SO(3))")) == _all_signs(3, det=1)  # the three half-turns
    assert _diag_set(softsym.group("Skeleton(O(5))")) == _all_signs(5)
    assert _diag_set(softsym.group("Skeleton(SO(2))")) == {(1, 1), (-1, -1)}


def test_skeleton_of_embedded_o2_keeps_its_axis():
    # O(2)@z: half-turn about z and the reflection x -> -x (O(2)'s generator diag(-1, 1) on coordinates x, y)
    assert _diag_set(softsym.group("Skeleton(O(2)@z)")) == {(1, 1, 1), (-1, -1, 1), (-1, 1, 1), (1, -1, 1)}
    assert _diag_set(softsym.group("Skeleton(O(2)@x)")) == {(1, 1, 1), (1, -1, -1), (1, -1, 1), (1, 1, -1)}


def test_skeleton_of_lorentz_groups_skips_boosts():
    assert _diag_set(softsym.group("Skeleton(O(1,3))")) == _all_signs(4)  # half-turns, parity, time reversal
    assert _diag_set(softsym.group("Skeleton(SO+(1,3))")) == {(1,) + s for s in _all_signs(3, det=1)}


def test_skeleton_of_a_finite_group_is_the_group():
    for spec, order in (("S(4)", 24), ("D(6)", 12), ("Signs(3)", 8)):
        assert softsym.group(f"Skeleton({spec})").order == order
        assert skeleton_candidates([spec]) == []  # same elements as the candidate: nothing new


def test_groups_without_a_finite_part_have_no_skeleton():
    for spec in ("SL(3)", "Scaling(3)", "GL+(2)"):
        assert finite_skeleton(softsym.group(spec)) is None
        with pytest.raises(GroupError, match="trivial or too large"):
            softsym.group(f"Skeleton({spec})")
    # two rotation frequencies 1 and sqrt(2): exp(pi A / sqrt 2) turns the first plane by an irrational angle
    a = np.zeros((4, 4))
    a[0, 1], a[1, 0], a[2, 3], a[3, 2] = -1, 1, -np.sqrt(2), np.sqrt(2)
    assert finite_skeleton(softsym.Group(lie_algebra=a[None])) is None
    with pytest.raises(GroupError, match="missing '\\)'"):
        softsym.group("Skeleton(O(3)")


def test_skeleton_follows_the_generator_basis():
    """Read off the generators: a rotated so(3) basis gives the rotated axis flips (documented)."""
    q = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0]
    rot = softsym.Group(lie_algebra=q @ softsym.SO(3).lie_np @ q.T, discrete_generators=(q @ np.diag([-1., 1, 1]) @ q.T)[None])
    sk = finite_skeleton(rot)
    assert sk.order == 8
    back = np.einsum("ji,njk,kl->nil", q, np.asarray(sk.elements()), q)
    assert np.allclose(back, np.stack([np.diag(np.diag(e)) for e in back]), atol=1e-12)


@pytest.mark.parametrize("spec, dim", [("Hom(V,V)", 3), ("V**2", 3), ("Hom(5V0+5V,V**2)", 15)])
def test_skeleton_basis_dimensions_equal_the_axis_flips(spec, dim):
    g = softsym.group("Skeleton(O(3))")
    assert softsym.equivariant_basis(softsym.rep(spec, g)).dim == dim


def test_skeleton_candidates_are_distinct_and_new():
    per = ["O(3)", "O(2)@x", "O(2)@y", "O(2)@z"]
    assert [s for s, _ in skeleton_candidates(per)] == [f"Skeleton({c})" for c in per]
    # Signs(3) already listed: Skeleton(O(3)) has the same elements and is dropped
    assert [s for s, _ in skeleton_candidates(per + ["Signs(3)"])] == [f"Skeleton({c})" for c in per[1:]]
    # O(3) and SO(3)xSigns... : two candidates with the same skeleton give it once
    assert [s for s, _ in skeleton_candidates(["O(3)", "Signs(3)@[0,1,2]:3"])] == []
    assert [s for s, _ in skeleton_candidates(["SO(3)", "O(3)"])] == ["Skeleton(SO(3))", "Skeleton(O(3))"]
    g = softsym.O(3)
    (spec, sk), = skeleton_candidates([g])
    assert spec is sk and sk.order == 8  # Group candidates get Group skeletons


def test_mixed_inertia_none_is_equivariant_under_the_skeleton_of_o3():
    rng = np.random.default_rng(1)
    x = np.concatenate([np.log1p(np.exp(rng.standard_normal((32, 5)))), rng.standard_normal((32, 15))], 1)
    y = _mixed_inertia_targets(x, "none")
    g = softsym.group("Skeleton(O(3))")
    rin, rout = softsym.rep("5V0+5V", g), softsym.rep("V**2", g)
    for e in torch.from_numpy(np.asarray(g.elements())):
        xg = rin.rho(e).apply(torch.from_numpy(x)).numpy()
        yg = rout.rho(e).apply(torch.from_numpy(y)).numpy()
        assert np.abs(_mixed_inertia_targets(xg, "none") - yg).max() <= 1e-12 * np.abs(y).max()


def test_build_model_adds_skeletons_to_soft_only():
    task = make_task("mixed-inertia:none", n_train=8, n_val=4, n_test=4, seed=0)
    soft = build_model("soft", task, ch=8, num_layers=1)
    assert list(soft.candidates) == list(task.candidates) + [f"Skeleton({c})" for c in task.candidates]
    assert soft.spec["skeletons"] is True and soft.symmetry.names[-1] == "Skeleton(O(2)@z)"
    assert list(build_model("soft", task, ch=8, num_layers=1, skeletons=False).candidates) == list(task.candidates)
    assert list(build_model("per", task, ch=8, num_layers=1).candidates) == list(task.candidates)  # PER's list
    assert len(build_model("per", task, ch=8, num_layers=1, skeletons=True).candidates) == 8
    with pytest.raises(ConfigError, match="only the soft models"):
        build_model("mlp", task, ch=8, num_layers=1, skeletons=True)
    with pytest.raises(ConfigError, match="True or False"):
        build_model("soft", task, ch=8, num_layers=1, skeletons="yes")
    # the model's strengths and residuals cover every candidate, skeletons included
    assert soft.residuals().shape == (8,)


def test_candidates_get_canonical_names_and_are_listed_once():
    """'o(3)' and ' O(2)@z ' are O(3) and O(2)@z in the model, its skeletons and the trainer's metrics."""
    task = make_task("mixed-inertia:none", n_train=8, n_val=4, n_test=4, seed=0)
    m = build_model("soft", task, ch=8, num_layers=1, candidates=["o(3)", " O(2)@z "])
    assert list(m.candidates) == ["O(3)", "O(2)@z", "Skeleton(O(3))", "Skeleton(O(2)@z)"]
    assert m.symmetry.names == list(m.candidates)
    with pytest.raises(ConfigError, match="same group"):
        build_model("soft", task, ch=8, num_layers=1, candidates=["o(3)", "O(3)"])
    with pytest.raises(ConfigError, match="wrap it in a list"):
        build_model("soft", task, ch=8, num_layers=1, candidates="O(3)")
    from softsym.groups.parse import canonical_spec

    assert canonical_spec("lorentz") == "O(1,3)" and canonical_spec(" so(3) ") == "SO(3)"
