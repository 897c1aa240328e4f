"""Tests of softsym.nn: exact equivariant layers and models, MLP / RPP baselines and SoftEMLP (PER)."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import softsym
from softsym import defaults
from softsym.errors import ConfigError, ModelError, RepError, SoftsymError
from softsym.nn import (
    EMLP, MLP, RPP, BiLinear, EquivariantLinear, GatedNonlinearity, SoftEMLP, bilinear_structure, gate_indices,
    gated, lambert_w, rank_counts, uniform_rep,
)

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small layers run fastest on one thread (and a busy machine does not oversubscribe)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def equivariance_error(f, rep_in, rep_out, group, *, n_g=4, batch=8, seed=0, dtype=F64):
    """max over sampled g of ||f(rho_in(g) x) - rho_out(g) f(x)|| / ||rho_out(g) f(x)|| (default spread)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, rep_in.size, generator=gen, dtype=dtype)
    gs = group.sample(n_g, seed=seed, spread=defaults.SAMPLE_SPREAD)
    worst = 0.0
    with torch.no_grad():
        fx = f(x)
        for g in gs:
            lhs = f(rep_in.rho(g).apply(x).to(dtype))
            rhs = rep_out.rho(g).apply(fx).to(dtype)
            worst = max(worst, float((lhs - rhs).norm() / rhs.norm().clamp_min(1e-300)))
    return worst


# ---------------------------------------------------------------------------------------------- reps
def test_uniform_rep_allocation_matches_emlp():
    assert lambert_w(384, 3) == 3 and lambert_w(128, 3) == 3 and lambert_w(384, 4) == 3 and lambert_w(1, 3) == 0
    assert rank_counts(384, 3).tolist() == [102, 34, 11, 3]
    assert rank_counts(128, 3).tolist() == [38, 12, 3, 1]
    assert rank_counts(384, 4).tolist() == [112, 28, 6, 1]
    for ch, g in [(384, "O(3)"), (128, "O(3)"), (384, "O(1,3)"), (100, "O(5)"), (64, "S(4)"), (7, "O(2)")]:
        assert uniform_rep(ch, g).size == ch
    assert repr(uniform_rep(384, "O(3)")) == "102*V0+34*V+11*(V⊗V)+3*(V⊗V⊗V)"


def test_uniform_rep_binomial_split_is_seeded():
    a, b = uniform_rep(384, "O(1,3)", seed=3), uniform_rep(384, "O(1,3)", seed=3)
    assert repr(a) == repr(b)
    state = np.random.get_state()
    uniform_rep(384, "O(1,3)", seed=4)
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]), "global numpy RNG must not be used"
    assert "V*" in repr(a)  # O(1,3) has V* != V: ranks split between T(k, r-k)
    assert "V*" not in repr(uniform_rep(384, "O(3)"))


def test_gated_and_gate_indices():
    r = softsym.rep("V0+V+V0+V**2", "O(3)")
    assert gated(r).size == r.size + 2
    idx = gate_indices(r)
    assert idx.tolist() == [0, 14, 14, 14, 4] + [15] * 9
    perm = softsym.rep("V0+V+V**2", "S(4)")
    assert gated(perm).size == perm.size  # permutation reps: pointwise swish, no gates
    assert gate_indices(perm).tolist() == list(range(perm.size))


# ---------------------------------------------------------------------------------------------- linear
CASES = [
    ("O(3)", "5V0+5V", "V**2"),
    ("O(5)", "2V", "V0+V"),
    ("O(1,3)", "4V", "V0+V+T(1,1)"),
    ("S(4)", "V+V0", "V"),
]


@pytest.mark.parametrize("group,rin,rout", CASES)
def test_equivariant_linear_is_equivariant(group, rin, rout):
    torch.manual_seed(0)
    G = softsym.group(group)
    lin = EquivariantLinear(rin, rout, group=G, dtype=F64)
    with torch.no_grad():
        lin.weight_coef.normal_()
        lin.bias_coef.normal_()
    assert equivariance_error(lin, lin.rep_in, lin.rep_out, G) < 1e-10


@pytest.mark.parametrize("group,rin,rout", CASES)
def test_equivariant_linear_shapes_and_counts(group, rin, rout):
    G = softsym.group(group)
    lin = EquivariantLinear(rin, rout, group=G, dtype=F64)
    bw = softsym.equivariant_basis(softsym.Hom(lin.rep_in, lin.rep_out))
    bb = softsym.equivariant_basis(lin.rep_out)
    assert lin.weight_coef.numel() == bw.dim and lin.bias_coef.numel() == bb.dim
    assert sum(p.numel() for p in lin.parameters()) == bw.dim + bb.dim
    assert lin.weight.shape == (lin.rep_out.size, lin.rep_in.size)
    y = lin(torch.randn(3, 7, lin.rep_in.size, dtype=F64))
    assert y.shape == (3, 7, lin.rep_out.size)
    # W = Q c with the coefficient order of softsym.Basis, differentiable in c
    cw, cb = lin.basis_coefficients()
    assert torch.allclose(bw.expand(cw).reshape(lin.weight.shape), lin.weight, atol=1e-12)
    assert torch.allclose(bb.expand(cb), lin.bias, atol=1e-12)
    lin.weight.sum().backward()
    assert lin.weight_coef.grad is not None
    # the default coef_scale="none": the parameters are the orthonormal-basis coefficients themselves
    assert lin.coef_scale == "none" and torch.equal(cw, lin.weight_coef)
    plain = EquivariantLinear(rin, rout, group=G, dtype=F64, coef_scale="l1")
    assert torch.allclose(bw.expand(plain.basis_coefficients()[0]).reshape(plain.weight.shape), plain.weight,
                          atol=1e-12)
    plain = EquivariantLinear(rin, rout, group=G, dtype=F64, coef_scale="none")
    assert torch.allclose(bw.expand(plain.weight_coef).reshape(plain.weight.shape), plain.weight, atol=1e-12)


def test_l1_coefficient_scale_gives_emlp_step_sizes():
    """A unit change of a trained coefficient moves W by ||q||_1 q (EMLP's Adam step along q), e.g. the O(3)
    identity block q = I/sqrt(3) of Hom(V, V): W moves by I (sqrt(3) * I/sqrt(3))."""
    lin = EquivariantLinear("V", "V", group="O(3)", dtype=F64, bias=False, coef_scale="l1")
    assert lin.weight_dim == 1
    with torch.no_grad():
        w0 = lin.weight.clone()
        lin.weight_coef.add_(1.0)
    assert torch.allclose(lin.weight - w0, torch.eye(3, dtype=F64), atol=1e-12)
    with pytest.raises(softsym.errors.ConfigError, match="coef_scale"):
        EquivariantLinear("V", "V", group="O(3)", coef_scale="l2")


def test_equivariant_linear_no_bias_and_bound_reps():
    G = softsym.group("O(3)")
    lin = EquivariantLinear(softsym.rep("V+V0", G), softsym.rep("V**2", G), bias=False)
    assert lin.bias_coef is None and lin.bias is None
    assert lin(torch.randn(2, 4)).dtype == torch.float32


def test_equivariant_linear_warns_on_empty_basis():
    with pytest.warns(RuntimeWarning, match="no equivariant weights"):
        lin = EquivariantLinear("V", "V0", group="O(3)")
    assert lin.weight_dim == 0
    assert torch.all(lin(torch.randn(4, 3)) == lin.bias)


def test_equivariant_linear_init_is_projected_dense_init():
    """EMLP's init: W = P W_dense with W_dense ~ U(-1/sqrt(in), 1/sqrt(in)), so E||W||^2 = dim / (3 in)."""
    torch.manual_seed(0)
    lin = EquivariantLinear("100V0+100V", "50V0+50V", group="O(3)", dtype=F64)
    expected = lin.weight_dim / (3 * lin.in_features)
    energies = []
    for _ in range(5):
        lin.reset_parameters()
        energies.append(lin.weight.detach().pow(2).sum().item())
    assert 0.9 < (sum(energies) / len(energies)) / expected < 1.1
    # the weight is exactly equivariant (its own projection)
    basis = softsym.equivariant_basis(softsym.Hom(lin.rep_in, lin.rep_out))
    w = lin.weight.detach().reshape(-1)
    assert torch.allclose(basis.project(w), w, atol=1e-12)


def test_eval_cache_is_invalidated_by_updates():
    lin = EquivariantLinear("2V0+V", "V0+V", group="O(3)", dtype=F64).eval()
    x = torch.randn(5, 5, dtype=F64)
    with torch.no_grad():
        y1 = lin(x)
        lin.weight_coef.add_(1.0)
        y2 = lin(x)
    assert not torch.allclose(y1, y2)
    assert torch.allclose(y2, torch.nn.functional.linear(x, lin.weight, lin.bias))


# ---------------------------------------------------------------------------------------------- bilinear / gates
@pytest.mark.parametrize("group,hidden", [
    ("O(3)", "4V0+3V+2V**2+V**3"),
    ("O(1,3)", "4V0+2V+2V*+T(1,1)+T(0,2)+T(2,1)+T(1,2)"),
    ("S(4)", "3V0+2V+V**2"),
])
def test_bilinear_equivariant_and_nonzero(group, hidden):
    torch.manual_seed(0)
    G = softsym.group(group)
    rep = gated(softsym.rep(hidden, G))
    bl = BiLinear(rep, rep, dtype=F64)
    assert bl.weight_dim > 0
    x = torch.randn(6, rep.size, dtype=F64)
    assert bl(x).abs().max() > 0
    assert equivariance_error(bl, rep, rep, G) < 1e-10
    # batch-major and feature-major paths agree
    assert torch.allclose(bl(x), bl.forward_t(x.t()).t())


@pytest.mark.parametrize("group,hidden", [
    ("O(3)", "3V0+2V+2V**2+V**3"),
    ("O(1,3)", "2V0+V+V*+T(1,1)+T(2,1)"),
    ("O(3)", "V+V0+V**2+V0"),  # blocks not stored contiguously: gather / permutation paths
])
@pytest.mark.parametrize("loop", [False, True])
def test_bilinear_gradcheck(group, hidden, loop, monkeypatch):
    import softsym.nn.bilinear as bilinear
    from softsym.nn.bilinear import _BilinearFn

    # loop=True: every contraction takes the in-place addcmul path used for large layers
    monkeypatch.setattr(bilinear, "_LOOP_MIN_TEMP", 0 if loop else 1 << 60)
    torch.manual_seed(0)
    rep = gated(softsym.rep(hidden, group))
    bl = BiLinear(rep, rep, dtype=F64)
    x = torch.randn(rep.size, 2, dtype=F64, requires_grad=True)
    for add in (False, True):
        assert torch.autograd.gradcheck(lambda a, w: _BilinearFn.apply(a, w, bl, add), (x, bl.weight))


def test_gates_gradcheck():
    from softsym.nn.gates import _GateFn

    torch.manual_seed(0)
    rep = softsym.rep("2V0+V+V**2", "O(3)")
    gn = GatedNonlinearity(rep, swish_path=True, dtype=F64)
    with torch.no_grad():
        gn.w_gated.normal_()
    x = torch.randn(gated(rep).size, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w: _GateFn.apply(a, w, gn.gate_rows, gn.gate_inverse, rep.size), (x, gn.w_gated))
    assert torch.autograd.gradcheck(lambda a: _GateFn.apply(a, None, gn.gate_rows, gn.gate_inverse, rep.size), (x,))


def _emlp_bilinear_count(rep, group):
    """EMLP's bilinear_weights active_dims: sum over tensor types t of (#copies of t in Hom) * min(#t in x, dim t)."""
    d = group.d
    orth = group.is_orthogonal

    def types(r):
        out = {}
        for c in r.components:
            key = (len(c.atoms),) if orth else (c.atoms.count(0), c.atoms.count(1))
            out[key] = out.get(key, 0) + c.count
        return out

    x = {k: v for k, v in types(rep).items() if sum(k) > 0}
    w = types(softsym.Hom(rep, rep))
    return sum(w.get(t, 0) * min(n, d ** sum(t)) for t, n in x.items())


@pytest.mark.parametrize("group,ch", [("O(3)", 384), ("O(1,3)", 384), ("O(5)", 100)])
def test_bilinear_parameter_count_matches_emlp(group, ch):
    G = softsym.group(group)
    rep = gated(uniform_rep(ch, G))
    assert bilinear_structure(rep, rep)["dim"] == _emlp_bilinear_count(rep, G)


def test_gated_nonlinearity():
    G = softsym.group("O(3)")
    rep = softsym.rep("2V0+V", G)
    gn = GatedNonlinearity(rep, dtype=F64)
    v = torch.randn(4, gated(rep).size, dtype=F64)
    out = gn(v)
    assert torch.allclose(out[:, :2], torch.nn.functional.silu(v[:, :2]))
    assert torch.allclose(out[:, 2:5], torch.sigmoid(v[:, 5:6]) * v[:, 2:5])
    assert torch.allclose(gn.forward_t(v.t()).t(), out)


# ---------------------------------------------------------------------------------------------- EMLP
EMLP_CASES = [
    ("O(3)", "5V0+5V", "V**2", 64),
    ("O(5)", "2V", "V0", 64),
    ("O(1,3)", "4V", "V0", "6V0+2V+2V*+T(1,1)+T(0,2)+T(2,0)"),
    ("S(4)", "V+V0", "V", 32),
]


@pytest.mark.parametrize("group,rin,rout,ch", EMLP_CASES)
def test_emlp_is_equivariant(group, rin, rout, ch):
    torch.manual_seed(0)
    model = EMLP(rin, rout, group, ch=ch, num_layers=2, dtype=F64)
    assert equivariance_error(model, model.rep_in, model.rep_out, model.group) < 1e-10
    assert float(model.regularization()) == 0.0


def test_emlp_float32_double_and_copy():
    torch.manual_seed(0)
    model = EMLP("5V0+5V", "V**2", "O(3)", ch=48, num_layers=2)
    p = next(model.parameters())
    assert p.dtype == torch.float32
    x = torch.randn(10, 20)
    y = model(x)
    assert y.dtype == torch.float32 and y.shape == (10, 9) and torch.isfinite(y).all()
    e32 = equivariance_error(model, model.rep_in, model.rep_out, model.group, dtype=torch.float32)
    assert e32 < 1e-4
    model.double()
    assert next(model.parameters()).dtype == F64
    # bases are rebuilt from the float64 masters, so float32 -> float64 keeps exact equivariance
    assert equivariance_error(model, model.rep_in, model.rep_out, model.group) < 1e-10
    clone = copy.deepcopy(model).to("cpu")
    assert torch.allclose(clone(x.double()), model(x.double()))
    clone.apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") and m is not clone else None)
    assert not torch.allclose(clone(x.double()), model(x.double()))
    assert "group=O(3)" in repr(model)


def test_emlp_architecture_and_parameter_counts():
    model = EMLP("5V0+5V", "V**2", "O(3)", ch=384, num_layers=3)
    h = model.hidden_reps[0]
    assert repr(h) == "102*V0+34*V+11*(V⊗V)+3*(V⊗V⊗V)"
    blocks = list(model.network)[:-1]
    assert len(blocks) == 3 and all(b.linear.out_features == 432 for b in blocks)
    summary = model.parameter_summary()
    assert summary["n_parameters"] == model.n_parameters
    bil = [r for r in summary["layers"] if r["layer"] == "bilinear"]
    assert all(r["equivariant"] == _emlp_bilinear_count(gated(h), model.group) for r in bil)
    lin_dense = sum(r["emlp_dense"] for r in summary["layers"] if r["layer"] == "linear")
    assert lin_dense == (20 * 432 + 432) + 2 * (384 * 432 + 432) + (384 * 9 + 9)


def test_emlp_accepts_rep_list_and_seed_reproducible():
    a = EMLP("4V", "V0", "O(1,3)", ch=[64, 48], seed=1)
    b = EMLP("4V", "V0", "O(1,3)", ch=[64, 48], seed=1)
    assert [repr(r) for r in a.hidden_reps] == [repr(r) for r in b.hidden_reps]
    assert a.n_parameters == b.n_parameters
    assert [r.size for r in a.hidden_reps] == [64, 48]


# ---------------------------------------------------------------------------------------------- MLP / RPP
def test_mlp_baseline():
    m = MLP("5V0+5V", "V**2", "O(3)", ch=32, num_layers=3)
    assert m(torch.randn(4, 20)).shape == (4, 9)
    assert m.n_parameters == (20 * 32 + 32) + 2 * (32 * 32 + 32) + (32 * 9 + 9)
    assert float(m.regularization()) == 0.0
    assert sum(isinstance(x, torch.nn.SiLU) for x in m.modules()) == 3


def test_rpp_regularization_and_near_equivariance():
    torch.manual_seed(0)
    m = RPP("5V0+5V", "V**2", "O(3)", ch=48, num_layers=2, basic_wd=2.0, equiv_wd=0.5, dtype=F64)
    layers = m.rpp_layers()
    assert len(layers) == 3
    basic = sum(float(l.weight_basic.detach().square().sum()) for l in layers)
    equiv = sum(float(l.equivariant.weight_coef.detach().square().sum()) for l in layers)
    assert math.isclose(float(m.regularization().detach()), 2.0 * basic + 0.5 * equiv, rel_tol=1e-12)
    # the dense path starts at 1e-3 of a dense init, the swish path at 1e-3
    for l in layers:
        assert float(l.weight_basic.detach().abs().max()) <= 1e-3 / math.sqrt(l.in_features) + 1e-15
    err = equivariance_error(m, m.rep_in, m.rep_out, m.group)
    assert 1e-8 < err < 0.05
    m.regularization().backward()
    assert layers[0].weight_basic.grad is not None
    with torch.no_grad():
        for l in layers:
            l.weight_basic.zero_()
            l.bias_basic.zero_()
        for mod in m.modules():
            if isinstance(mod, GatedNonlinearity):
                mod.w_gated.zero_()
    assert equivariance_error(m, m.rep_in, m.rep_out, m.group) < 1e-10


# ---------------------------------------------------------------------------------------------- SoftEMLP
CANDIDATES = ["O(3)", "O(2)@x", "O(2)@y", "O(2)@z"]


@pytest.fixture(scope="module")
def soft_model():
    torch.manual_seed(0)
    return SoftEMLP("5V0+5V", "V**2", CANDIDATES, ch=32, num_layers=2, dtype=F64)


def _reference_layer_residuals(model):
    """1/2 (||W||^2 - ||Q_j^T vec W||^2) + same for b, via Basis.coefficients (the definition)."""
    out = torch.zeros(len(model.linear_layers()), len(model.groups), dtype=F64)
    for l, (lin, (rin, rout, _)) in enumerate(zip(model.linear_layers(), model._layer_reps)):
        for j, g in enumerate(model.groups):
            bw = softsym.equivariant_basis(softsym.Hom(rin.bind(g), rout.bind(g)))
            bb = softsym.equivariant_basis(rout.bind(g))
            w, b = lin.weight.detach().reshape(-1), lin.bias.detach()
            out[l, j] = 0.5 * (w.square().sum() - bw.coefficients(w).square().sum()) \
                + 0.5 * (b.square().sum() - bb.coefficients(b).square().sum())
    return out


def test_soft_emlp_residuals_match_definition(soft_model):
    R = soft_model.layer_residuals()
    assert R.shape == (3, 4)
    ref = _reference_layer_residuals(soft_model)
    assert torch.allclose(R.detach(), ref, rtol=1e-9, atol=1e-12)
    r = soft_model.residuals()
    assert r.shape == (4,) and torch.all(r > 0)
    assert torch.allclose(soft_model.regularization(), (soft_model.symmetry.strengths * r).sum())
    soft_model.zero_grad()
    soft_model.regularization().backward()
    assert soft_model.linear_layers()[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("j", [0, 3])
def test_soft_emlp_residual_vanishes_after_projection(soft_model, j):
    m = copy.deepcopy(soft_model)
    m.project_(j)
    theta2 = float(m.flat_parameters().detach().square().sum())
    r = m.residuals().detach()
    assert float(r[j]) / theta2 < 1e-20
    others = [k for k in range(4) if k != j]
    if j == 0:  # O(3)-equivariant weights are O(2)-equivariant too
        assert torch.all(r[others] / theta2 < 1e-20)
    else:
        assert float(r[0]) / theta2 > 1e-6
    # with linear layers projected onto O(3) and no swish path, the model is exactly O(3)-equivariant
    if j == 0:
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, GatedNonlinearity) and mod.w_gated is not None:
                    mod.w_gated.zero_()
        assert equivariance_error(m, m.rep_in, m.rep_out, m.groups[0]) < 1e-10


@pytest.mark.parametrize("perp_max", [27, 0])
def test_soft_emlp_penalty_gradcheck(perp_max, monkeypatch):
    import softsym.nn.projection as proj

    monkeypatch.setattr(proj, "PERP_MAX_BLOCK", perp_max)  # exercise both the complement and the reconstruction path
    torch.manual_seed(0)
    m = SoftEMLP("5V0+5V", "V**2", ["O(3)", "O(2)@x", "O(2)@z"], ch=12, num_layers=1, dtype=F64)
    theta = m.flat_parameters().detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(m.projection, (theta,))
    m2 = SoftEMLP("2V", "V0", ["SO(1,3)", "O(1,3)"], ch=12, num_layers=1, dtype=F64)  # blocks with no invariants
    assert m2.projection.has_free
    theta2 = m2.flat_parameters().detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(m2.projection, (theta2,))


def test_soft_emlp_defaults_and_dtypes():
    m = SoftEMLP("5V0+5V", "V**2", ["O(3)", "O(2)@z"], ch=32, num_layers=1)
    assert m.full_group.name == "O(3)" and next(m.parameters()).dtype == torch.float32
    y = m(torch.randn(5, 20))
    assert y.shape == (5, 9)
    r32 = m.residuals()
    assert r32.dtype == torch.float32 and r32.shape == (2,)
    m.double()
    assert m.residuals().dtype == F64
    assert torch.allclose(m.residuals().float(), r32, rtol=1e-4)
    m2 = SoftEMLP("5V0+5V", "V**2", ["O(2)@z"], full_group="O(3)", ch=32, num_layers=1, strengths=[3.0])
    assert float(m2.symmetry.strengths[0]) == 3.0 and m2.full_group.name == "O(3)"
    m3 = SoftEMLP("5V0+5V", "V**2", ["O(3)", "O(2)@z"], ch=32, num_layers=2, bilinear=False, dtype=F64)
    assert all(b.bilinear is None for b in list(m3.network)[:-1])
    m3.project_(0)
    with torch.no_grad():
        for mod in m3.modules():
            if isinstance(mod, GatedNonlinearity):
                mod.w_gated.zero_()
    assert equivariance_error(m3, m3.rep_in, m3.rep_out, m3.groups[0]) < 1e-10


def test_soft_emlp_lambda_drives_equivariance():
    """Train on Inertia with a penalty on O(2)@z only: the O(2)@z equivariance error falls as lambda grows."""
    from softsym.data.synthetic import make_task

    task = make_task("inertia", n_train=256, n_val=8, n_test=64, seed=0)
    x, y = task.x_train, task.y_train
    errors = {}
    for lam in (0.0, 1.0, 100.0):
        torch.manual_seed(0)
        m = SoftEMLP("5V0+5V", "V**2", CANDIDATES, ch=24, num_layers=2, dtype=F64,
                     strengths=[0.0, 0.0, 0.0, lam])
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        for step in range(250):
            idx = torch.randint(0, x.shape[0], (64,))
            loss = ((m(x[idx]) - y[idx]) ** 2).mean() + m.regularization()
            opt.zero_grad()
            loss.backward()
            opt.step()
        rin, rout = m.candidate_reps(3)
        errors[lam] = equivariance_error(m, rin, rout, m.groups[3], batch=32, n_g=4)
    assert errors[100.0] < errors[1.0] < errors[0.0], errors
    assert errors[100.0] < 0.2 * errors[0.0], errors


def test_soft_emlp_proximal_step():
    """penalty="prox": the penalty leaves the loss and acts as theta <- theta - f (theta - P theta) after each
    step, f = lr lambda / (1 + lr lambda): one candidate's residual shrinks by exactly (1 - f)^2."""
    torch.manual_seed(0)
    m = SoftEMLP("5V0+5V", "V**2", ["O(3)", "O(2)@z"], ch=16, num_layers=1, dtype=F64, penalty="prox",
                 strengths=[0.0, 50.0])
    assert float(m.regularization()) == 0.0
    r0 = m.residuals().detach()
    m.proximal_step(0.01)  # f = 0.5 / 1.5 = 1/3
    r1 = m.residuals().detach()
    assert math.isclose(float(r1[1] / r0[1]), (2 / 3) ** 2, rel_tol=1e-9)
    assert float(r1[0]) < float(r0[0])  # moving towards the O(2)@z subspace also reduces part of the O(3) residual
    theta = m.flat_parameters().detach().clone()
    full = m.projection.shrink_(theta.clone(), [0.0, 1.0])  # f = 1 is the projection
    assert torch.allclose(full, m.projection.project(theta, 1), atol=1e-14)
    m.symmetry.set_strengths([0.0, 0.0])
    m.proximal_step(0.01)  # zero strengths: nothing moves
    assert torch.equal(m.flat_parameters().detach(), theta)
    with pytest.raises(ConfigError, match="penalty"):
        SoftEMLP("5V0+5V", "V**2", ["O(3)"], ch=8, num_layers=1, penalty="l2")


def test_soft_emlp_proximal_gradient():
    """Before the optimiser step the gradient is shrunk like the weights: with f = 1 it is the projected gradient,
    so Adam's moments never see the non-equivariant part."""
    torch.manual_seed(0)
    m = SoftEMLP("5V0+5V", "V**2", ["O(3)", "O(2)@z"], ch=16, num_layers=1, dtype=F64, penalty="prox",
                 strengths=[0.0, 1e30])
    x = torch.randn(8, 20, dtype=F64)
    m(x).square().sum().backward()
    g = torch.cat([t.grad.reshape(-1) for lin in m.linear_layers() for t in (lin.weight, lin.bias)])
    m.proximal_gradient(1.0)  # f = 1 for O(2)@z
    g2 = torch.cat([t.grad.reshape(-1) for lin in m.linear_layers() for t in (lin.weight, lin.bias)])
    assert torch.allclose(g2, m.projection.project(g, 1), atol=1e-12)
    assert not torch.allclose(g2, g)
    loss_mode = SoftEMLP("5V0+5V", "V**2", ["O(3)"], ch=8, num_layers=1, dtype=F64)
    loss_mode(x).sum().backward()
    before = [p.grad.clone() for p in loss_mode.parameters()]
    loss_mode.proximal_gradient(1.0)  # penalty="loss": a no-op
    assert all(torch.equal(a, p.grad) for a, p in zip(before, loss_mode.parameters()))


def test_soft_emlp_prox_training_reaches_the_subspace():
    """Training with a strong prox strength on O(2)@z gives an (almost) exactly O(2)@z-equivariant model."""
    from softsym.data.synthetic import make_task

    task = make_task("inertia", n_train=128, n_val=8, n_test=8, seed=0)
    x, y = task.x_train, task.y_train
    torch.manual_seed(0)
    m = SoftEMLP("5V0+5V", "V**2", CANDIDATES, ch=16, num_layers=1, dtype=F64, penalty="prox", swish_path=False,
                 strengths=[0.0, 0.0, 0.0, 1e6])
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(30):
        loss = ((m(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.proximal_step(3e-3)
    rin, rout = m.candidate_reps(3)
    assert equivariance_error(m, rin, rout, m.groups[3], batch=16, n_g=4) < 1e-4  # 1 - f = 3e-4 of the last step
    assert equivariance_error(m, *m.candidate_reps(0), m.groups[0], batch=16, n_g=4) > 1e-3


# ---------------------------------------------------------------------------------------------- errors
def test_bad_reps_and_groups_raise_softsym_errors():
    G3, G5 = softsym.group("O(3)"), softsym.group("O(5)")
    with pytest.raises(RepError):
        EquivariantLinear(softsym.rep("V", G3), softsym.rep("V", G5))
    with pytest.raises(RepError):
        EMLP(softsym.rep("2V", G5), "V0", "O(3)")
    with pytest.raises(RepError):
        EquivariantLinear("V", "V")  # unbound reps need a group
    with pytest.raises(RepError):
        EMLP("5V0+5V", "V**2", "O(3)", ch=16, num_layers=1)(torch.randn(4, 21))  # wrong input size
    with pytest.raises(RepError):
        EquivariantLinear("V", "V", group="O(3)")(torch.randn(2, 4))
    with pytest.raises(ConfigError):
        SoftEMLP("2V", "V0", ["O(3)", "O(5)"])  # candidates act on different R^d
    with pytest.raises(RepError, match="acts on R\\^5"):
        SoftEMLP(softsym.rep("V", "O(5)"), "V0", ["O(3)"])  # a bound rep's group must act on the candidates' R^d
    with pytest.raises(ConfigError):
        EMLP("V", "V", "O(3)", ch=-4)
    with pytest.raises(ConfigError):
        EMLP("V", "V", "O(3)", num_layers=-1)
    with pytest.raises(ModelError):
        EMLP("V", "V", "SU(2)", ch=8)
    with pytest.raises(SoftsymError):
        SoftEMLP("V", "V", ["O(3)"], ch=16).project_("nope")


def test_zero_dim_inputs_raise_rep_errors():
    """A 0-d tensor has no feature axis: every layer and model refuses it with a RepError (was IndexError)."""
    G = softsym.group("O(3)")
    x = torch.tensor(1.0)
    modules = [
        EquivariantLinear("V0", "V0", group="O(3)"), BiLinear("V", "V", group="O(3)"),
        GatedNonlinearity(softsym.rep("V0", G)), EMLP("V0", "V0", "O(3)", ch=4, num_layers=1),
        MLP("V0", "V0", "O(3)", ch=4, num_layers=1), RPP("V0", "V0", "O(3)", ch=4, num_layers=1),
        SoftEMLP("V0", "V0", ["O(3)"], ch=4, num_layers=1),
    ]
    for m in modules:
        with pytest.raises(RepError, match="got shape \\(\\)"):
            m(x)
    assert modules[3](torch.ones(1)).shape == (1,)  # a single 1-d sample still works


def test_width_and_depth_must_be_plain_ints():
    with pytest.raises(ConfigError, match="list of ints"):
        MLP("V", "V", "O(3)", ch=[8.5])  # was silently truncated to 8
    with pytest.raises(ConfigError, match="list of ints"):
        MLP("V", "V", "O(3)", ch=["a"])  # was ValueError
    with pytest.raises(ConfigError, match="num_layers"):
        EMLP("V", "V", "O(3)", ch=8, num_layers=True)  # was one layer
    assert [m.out_features for m in MLP("V", "V", "O(3)", ch=[6, np.int64(5)]).network
            if isinstance(m, torch.nn.Linear)] == [6, 5, 3]


def test_nn_doctests():
    import doctest

    import softsym.nn.reps

    result = doctest.testmod(softsym.nn.reps, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# ------------------------------------------------------------------ EMLP-style call signatures
def test_models_take_ch_and_num_layers_positionally_like_emlp():
    # EMLP's own API is EMLP(rep_in, rep_out, group, ch=384, num_layers=3): positional ch / num_layers work too
    import softsym
    from softsym import MLP, RPP, V

    G = softsym.group("O(3)")
    rin, rout = softsym.rep("5V0+5V", G), (V**2)(G)
    assert EMLP(rin, rout, G, 16, 2).n_parameters == EMLP(rin, rout, G, ch=16, num_layers=2).n_parameters
    assert len(EMLP(rin, rout, G, 16, 2).hidden_reps) == 2
    assert MLP(rin, rout, G, 16, 2).n_parameters == MLP(rin, rout, G, ch=16, num_layers=2).n_parameters
    assert RPP(rin, rout, G, 16, 2).n_parameters == RPP(rin, rout, G, ch=16, num_layers=2).n_parameters
    soft = SoftEMLP("5V0+5V", "V**2", ["O(3)", "O(2)@z"], 16, 2)
    assert len(soft.hidden_reps) == 2


def test_soft_emlp_accepts_bound_reps_as_expressions():
    # a rep bound to the full group (or any group) is used as an expression and re-bound to every candidate
    import softsym
    from softsym import V

    G = softsym.group("O(3)")
    torch.manual_seed(0)
    bound = SoftEMLP(softsym.rep("5V0+5V", G), (V**2)(G), [G, "O(2)@z"], ch=16, num_layers=1)
    torch.manual_seed(0)
    plain = SoftEMLP("5V0+5V", "V**2", [G, "O(2)@z"], ch=16, num_layers=1)
    assert bound.rep_in_expr.group is None and repr(bound.rep_in_expr) == repr(plain.rep_in_expr)
    assert bound.n_parameters == plain.n_parameters
    assert torch.allclose(bound.residuals(), plain.residuals())
    rin_z, rout_z = bound.candidate_reps(1)
    assert rin_z.group == softsym.group("O(2)@z") and rout_z.size == 9


# ------------------------------------------------------------------ plain autograd path (torch.func, double backward)
def _models_for_plain():
    torch.manual_seed(0)
    return [SoftEMLP("5V0+5V", "V**2", ["O(3)", "O(2)@z"], ch=24, num_layers=2).double(),
            EMLP("4V", "V0", "O(1,3)", ch=24, num_layers=2).double()]


def test_plain_autograd_path_matches_the_custom_kernels():
    from softsym.nn import plain_autograd

    for m in _models_for_plain():
        x = torch.randn(12, m.in_features, dtype=torch.float64, requires_grad=True)
        y_fast = m(x)
        with plain_autograd():
            y_plain = m(x)
        assert y_plain.grad_fn is not None and "Bilinear" not in type(y_plain.grad_fn).__name__
        assert torch.allclose(y_fast, y_plain, rtol=0, atol=1e-13)
        g = torch.randn_like(y_fast)
        fast = torch.autograd.grad(y_fast, [x, *m.parameters()], g, allow_unused=True)
        plain = torch.autograd.grad(y_plain, [x, *m.parameters()], g, allow_unused=True)
        for a, b in zip(fast, plain):
            assert (a is None) == (b is None)
            if a is not None:
                assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_torch_func_transforms_work_on_emlp_models():
    from torch.func import jvp, vmap

    for m in _models_for_plain():
        x = torch.randn(6, m.in_features, dtype=torch.float64)
        t = torch.randn_like(x)
        y, dy = jvp(m, (x,), (t,))  # was: "autograd.Function ... must override the setup_context staticmethod"
        h = 1e-5
        with torch.no_grad():
            fd = (m(x + h * t) - m(x - h * t)) / (2 * h)
        assert torch.allclose(y, m(x).detach(), atol=1e-13)
        assert torch.allclose(dy, fd, rtol=1e-6, atol=1e-8)
        batched = vmap(m)(x[:, None, :])  # one sample per call
        assert torch.allclose(batched[:, 0], m(x).detach(), atol=1e-12)


def test_lie_derivative_of_emlp_uses_forward_mode_and_lie_penalty_trains_soft_emlp():
    from softsym.metrics import lie_derivative_error
    from softsym.nn import plain_autograd
    from softsym.soft import SoftSymmetry
    from softsym.soft.lie import LiePenalty

    torch.manual_seed(0)
    exact = EMLP("5V0+5V", "V**2", "O(3)", ch=16, num_layers=1).double()
    x = torch.randn(8, 20, dtype=torch.float64)
    r = lie_derivative_error(exact, "O(3)", "5V0+5V", "V**2", x)
    assert r.method == "jvp" and r.max < 1e-12
    soft = SoftEMLP("5V0+5V", "V**2", ["O(3)", "O(2)@z"], ch=16, num_layers=1).double()
    grads = {}
    for method in ("jvp", "vjp"):  # forward mode, and reverse mode twice through the plain ops
        soft.zero_grad()
        pen = LiePenalty(SoftSymmetry(["O(3)"]), "5V0+5V", "V**2", method=method)
        with plain_autograd():
            res = pen.residuals(soft, x)
        res.sum().backward()
        grads[method] = (float(res.sum().detach()), soft.network[0].linear.weight.grad.clone())
    assert grads["jvp"][0] > 1e-3 and abs(grads["jvp"][0] - grads["vjp"][0]) < 1e-10
    assert torch.allclose(grads["jvp"][1], grads["vjp"][1], rtol=1e-8, atol=1e-12)
