"""Synthetic tasks: shapes, seeds, normalisation and the exact symmetry of the targets (float64)."""
import numpy as np
import pytest
import torch

import softsym
from softsym.data import TASKS, make_task
from softsym.data.synthetic import MIXED_INERTIA_VARIANTS, target_function
from softsym.errors import ConfigError, SoftsymError

SHAPES = {"o5synthetic": (10, 1), "inertia": (20, 9), "particle-interaction": (16, 1)}


def _shape(name):
    return SHAPES.get(name, (20, 9))


@pytest.mark.parametrize("name", TASKS)
def test_shapes_dtypes_and_metadata(name):
    t = make_task(name, n_train=12, n_val=5, n_test=7, seed=3)
    d_in, d_out = _shape(name)
    for (x, y), n in zip(t.splits().values(), (12, 5, 7)):
        assert x.shape == (n, d_in) and y.shape == (n, d_out)
        assert x.dtype == torch.float64 and y.dtype == torch.float64
        assert torch.all(torch.isfinite(x)) and torch.all(torch.isfinite(y))
    assert t.x_scale.shape == (d_in,) and t.y_mean.shape == (d_out,) and t.y_std.shape == (d_out,)
    assert torch.all(t.x_scale > 0) and torch.all(t.y_std > 0)
    g = softsym.group(t.group)
    assert softsym.rep(t.rep_in, g).size == d_in and softsym.rep(t.rep_out, g).size == d_out
    assert set(t.true_groups) <= set(t.candidates)


def test_default_split_sizes_follow_the_protocols():
    assert make_task("inertia", n_train=4, seed=0).info["sizes"] == (4, 1000, 5000)
    assert make_task("mixed-inertia:o2z", n_train=4, seed=0).info["sizes"] == (4, 1000, 1000)


@pytest.mark.parametrize("name", ["inertia", "mixed-inertia:none", "particle-interaction"])
def test_seeds_reproducible_and_distinct(name):
    a, b = make_task(name, n_train=20, n_val=4, n_test=4, seed=1), make_task(name, n_train=20, n_val=4, n_test=4, seed=1)
    c = make_task(name, n_train=20, n_val=4, n_test=4, seed=2)
    for (xa, ya), (xb, yb), (xc, _) in zip(a.splits().values(), b.splits().values(), c.splits().values()):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert not torch.equal(xa, xc)
    # val/test do not depend on n_train
    d = make_task(name, n_train=50, n_val=4, n_test=4, seed=1)
    assert torch.equal(d.x_val, a.x_val) and torch.equal(d.x_test, a.x_test)


def test_bad_names_and_sizes_raise_softsym_errors():
    with pytest.raises(SoftsymError, match="unknown task"):
        make_task("inertia2")
    with pytest.raises(ConfigError, match="mixed-inertia:o2z"):
        make_task("mixed-inertia:o2q")
    with pytest.raises(ConfigError, match="n_train"):
        make_task("inertia", n_train=0)
    with pytest.raises(ConfigError):
        make_task(None)


def test_bad_seeds_and_bool_sizes_raise_config_errors():
    for seed in (-1, 1.5, "0", None, True):  # were ValueError / TypeError from numpy, True was seed 1
        with pytest.raises(ConfigError, match="seed"):
            make_task("inertia", n_train=4, n_val=2, n_test=2, seed=seed)
    with pytest.raises(ConfigError, match="n_train"):
        make_task("inertia", n_train=True)  # was a TypeError
    assert torch.equal(make_task("inertia", n_train=4, n_val=2, n_test=2, seed=np.int64(3)).x_train,
                       make_task("inertia", n_train=4, n_val=2, n_test=2, seed=3).x_train)


@pytest.mark.parametrize("name", ["o5synthetic", "particle-interaction"])
def test_single_training_sample_keeps_a_unit_output_scale(name):
    """std of one target is 0: y_std = 0 made every Standardized prediction the constant y_mean (zero gradients)."""
    t = make_task(name, n_train=1, n_val=2, n_test=2, seed=0)
    assert torch.equal(t.y_std, torch.ones(1, dtype=torch.float64))
    assert torch.equal(t.y_mean, t.y_train.reshape(1))


def _equivariance_residual(name, group_spec, n=64, seed=0, task=None):
    """max |f(rho_in(g_i) x_i) - rho_out(g_i) f(x_i)| / max |f(x)| with one sampled g_i per input (float64)."""
    t = task or make_task(name, n_train=n, n_val=2, n_test=2, seed=seed)
    f = target_function(name)
    g = softsym.group(group_spec)
    rin, rout = softsym.rep(t.rep_in, g), softsym.rep(t.rep_out, g)
    x = t.x_train
    fx = f(x)
    gs = g.sample(len(x), seed=seed + 11)
    lhs = f(rin.rho(gs).apply(x))
    rhs = rout.rho(gs).apply(fx)
    return float((lhs - rhs).abs().max() / fx.abs().max())


@pytest.mark.parametrize("name", ["o5synthetic", "inertia", "particle-interaction"])
def test_emlp_targets_are_symmetric_for_their_group(name):
    t = make_task(name, n_train=4, n_val=2, n_test=2)
    assert torch.equal(target_function(name)(t.x_train), t.y_train)
    assert _equivariance_residual(name, t.group) < 1e-10


@pytest.mark.parametrize("variant", MIXED_INERTIA_VARIANTS)
def test_mixed_inertia_exact_for_true_groups_broken_for_others(variant):
    name = f"mixed-inertia:{variant}"
    t = make_task(name, n_train=64, n_val=2, n_test=2)
    assert t.candidates == ("O(3)", "O(2)@x", "O(2)@y", "O(2)@z")
    expected_true = {"o3": set(t.candidates), "o2x": {"O(2)@x"}, "o2y": {"O(2)@y"}, "o2z": {"O(2)@z"},
                     "none": set()}[variant]
    assert set(t.true_groups) == expected_true
    for g in t.candidates:
        err = _equivariance_residual(name, g, task=t)
        if g in expected_true:
            assert err < 1e-12, (g, err)
        else:
            assert err > 1e-3, (g, err)


def test_normalisation_is_per_block_and_invariant_only():
    t = make_task("particle-interaction", n_train=200, n_val=2, n_test=2, seed=0)
    s = t.x_scale.reshape(4, 4)
    assert torch.allclose(s, s[:, :1].expand(4, 4))  # one scale per four-vector
    eta = torch.diag(torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=torch.float64))
    p = t.x_train.reshape(-1, 4, 4)
    # EMLP's Xscale: sqrt(mean over samples and components of |(p eta)_i p_i|), one per four-vector
    assert torch.allclose(s[:, 0], ((p @ eta) * p).abs().mean(-1).mean(0).sqrt())
    assert 0.23 < float(s.min()) and float(s.max()) < 0.27  # components N(0, 1/16): RMS 0.25
    o5 = make_task("o5synthetic", n_train=200, n_val=2, n_test=2, seed=0)
    assert torch.allclose(o5.y_mean, o5.y_train.mean().expand(1)) and torch.allclose(o5.y_std, o5.y_train.std(unbiased=False).expand(1))
    inertia = make_task("inertia", n_train=10, n_val=2, n_test=2)
    assert torch.equal(inertia.x_scale, torch.ones(20, dtype=torch.float64))
    assert torch.equal(inertia.y_std, torch.ones(9, dtype=torch.float64))


def test_target_function_accepts_numpy():
    x = np.random.default_rng(0).standard_normal((3, 20))
    y = target_function("mixed-inertia:o2z")(x)
    assert isinstance(y, np.ndarray) and y.shape == (3, 9)


def test_mixed_inertia_formula_matches_the_spec():
    """y = I (I3 + c e_a e_a^T), c = -1 for the o2 variants; none: I (I3 + c(-e_x e_x^T + e_y e_y^T))."""
    x = np.abs(np.random.default_rng(1).standard_normal((4, 20)))
    inertia = target_function("inertia")(x).reshape(4, 3, 3)
    e = np.eye(3)
    expected = {"o3": np.eye(3), "o2x": np.eye(3) - np.outer(e[0], e[0]), "o2y": np.eye(3) - np.outer(e[1], e[1]),
                "o2z": np.eye(3) - np.outer(e[2], e[2]),
                "none": np.eye(3) - (-np.outer(e[0], e[0]) + np.outer(e[1], e[1]))}
    for variant, m in expected.items():
        y = target_function(f"mixed-inertia:{variant}")(x).reshape(4, 3, 3)
        assert np.allclose(y, inertia @ m, atol=1e-12)
    y = target_function("mixed-inertia:o2z", c=0.3)(x).reshape(4, 3, 3)
    assert np.allclose(y, inertia @ (np.eye(3) + 0.3 * np.outer(e[2], e[2])), atol=1e-12)
    assert make_task("mixed-inertia:o2z", n_train=3, seed=0, c=0.3).info["c"] == 0.3
    with pytest.raises(ConfigError, match="only applies"):
        make_task("inertia", n_train=3, c=0.3)
    with pytest.raises(ConfigError, match="non-zero"):
        make_task("mixed-inertia:o2z", n_train=3, c=0.0)
