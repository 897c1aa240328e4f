"""Metrics: exactness on equivariant maps, negative controls, Lie derivative vs finite differences, meters."""
from __future__ import annotations

import math

import pytest
import torch

import softsym
from softsym.errors import ConfigError, DataError, ModelError
from softsym.metrics import (
    EquivarianceMeter,
    LieDerivativeMeter,
    equivariance_error,
    group_elements,
    lie_derivative,
    lie_derivative_error,
    scale_adjusted_rel_err,
    subspace_energy,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _norm_scaled(x):
    """An O(d)-equivariant map V -> V: x |x|."""
    return x * x.norm(dim=1, keepdim=True)


class BasisModel(torch.nn.Module):
    """Exactly equivariant: y = (W x) * sigmoid(w0 . x) with W, w0 spanned by equivariant bases (float64)."""

    def __init__(self, group, rep_in, rep_out, seed=0):
        super().__init__()
        g = softsym.group(group)
        rin, rout = softsym.rep(rep_in, g), softsym.rep(rep_out, g)
        self.bw = softsym.equivariant_basis(softsym.Hom(rin, rout))
        self.bs = softsym.equivariant_basis(softsym.Hom(rin, softsym.rep("V0", g)))
        gen = torch.Generator().manual_seed(seed)
        self.cw = torch.nn.Parameter(torch.randn(self.bw.dim, generator=gen, dtype=torch.float64))
        self.cs = torch.nn.Parameter(torch.randn(self.bs.dim, generator=gen, dtype=torch.float64))
        self.n_in, self.n_out = rin.size, rout.size

    def forward(self, x):
        w = self.bw.expand(self.cw).reshape(self.n_out, self.n_in)
        s = self.bs.expand(self.cs).reshape(1, self.n_in)
        # invariant nonlinearity: a gate from an invariant of x (here |x|^2-like quadratic via (s x)^2)
        gate = torch.sigmoid((x @ s.T) ** 2 + (x * x).sum(1, keepdim=True) * 0.1)
        return (x @ w.T) * gate


@pytest.fixture
def x3():
    return torch.randn(32, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- positive controls (~0)
@pytest.mark.parametrize("group", ["O(3)", "SO(3)", "O(2)@z"])
def test_equivariant_map_has_zero_error(group, x3):
    res = equivariance_error(_norm_scaled, group, "V", "V", x3, n_samples=16)
    assert res.max < 1e-12 and res.plain_max < 1e-12
    lie = lie_derivative_error(_norm_scaled, group, "V", "V", x3)
    assert lie.max < 1e-12
    assert lie.n_generators == len(softsym.group(group).lie_np)


def test_basis_model_inertia_reps_zero_error():
    model = BasisModel("O(3)", "2V0+2V", "V**2")
    x = torch.randn(16, 8, dtype=torch.float64)
    assert equivariance_error(model, "O(3)", "2V0+2V", "V**2", x, 16).max < 1e-12
    lie = lie_derivative_error(model, "O(3)", "2V0+2V", "V**2", x)
    assert lie.max < 1e-12 and len(lie.per_generator) == 3


def test_finite_group_exhaustive_and_invariant():
    x = torch.randn(8, 5, dtype=torch.float64)
    res = equivariance_error(lambda v: v.pow(2).sum(1, keepdim=True), "S(5)", "V", "V0", x)
    assert res.exhaustive and res.n_samples == 120 and res.max < 1e-12
    lie = lie_derivative_error(lambda v: v.sum(1, keepdim=True), "S(5)", "V", "V0", x)
    assert lie.n_generators == 0 and lie.max == 0.0


@pytest.mark.parametrize("group,order", [("S(3)*S(2)", 12), ("D(6)@z", 12), ("S(3)@[0,1,2]:4", 6)])
def test_products_and_embeddings_of_finite_groups_are_exhaustive(group, order):
    g = softsym.group(group)
    els, exhaustive, _, desc = group_elements(g)
    assert exhaustive and len(els) == order and desc == f"exhaustive ({order} elements)"
    assert len({tuple(e.round(decimals=9).flatten().tolist()) for e in els + 0.0}) == order  # distinct
    x = torch.randn(4, g.d, dtype=torch.float64)
    res = equivariance_error(lambda v: v.pow(3), group, "V", "V", x)  # permutation-equivariant, not D(6)
    assert res.exhaustive and res.n_samples == order
    assert (res.max < 1e-15) == (group != "D(6)@z")


def test_dihedral_elements_are_distinct():
    els, exhaustive, spread, _ = group_elements("D(6)")
    assert exhaustive and spread is None and len(els) == 12
    flat = els.reshape(12, -1)
    assert torch.cdist(flat, flat).add(torch.eye(12, dtype=els.dtype)).min() > 0.1


# ---------------------------------------------------------------- negative controls
def test_random_linear_map_has_order_one_error(x3):
    lin = torch.nn.Linear(3, 3).double()
    torch.nn.init.normal_(lin.weight)
    res = equivariance_error(lin, "O(3)", "V", "V", x3, 32)
    assert 0.1 < res.mean < 1.0 and res.max <= 1.0
    assert res.plain_mean > 0.3
    assert lie_derivative_error(lin, "SO(3)", "V", "V", x3).mean > 0.1


def test_broken_map_is_not_exact(x3):
    broken = lambda v: _norm_scaled(v) + 1e-3 * v[:, :1]  # noqa: E731
    res = equivariance_error(broken, "O(3)", "V", "V", x3, 16)
    assert res.max > 1e-6
    from softsym.check import check
    report = check(broken, ["O(3)"], "V", "V", n_inputs=16)
    assert report.results[0].verdict != "exact"


def test_scale_adjusted_error_formula():
    a = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    g = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    # rms(a-b)=1, rms(a)=rms(b)=1/sqrt(2), mean|g-I| = 1
    expected = 1.0 / (2 / math.sqrt(2) + 1.0)
    assert abs(scale_adjusted_rel_err(a, b, g) - expected) < 1e-15


def test_noncompact_group_reports_spread():
    x = torch.randn(8, 4, dtype=torch.float64)
    lin = torch.nn.Linear(4, 4).double()
    res = equivariance_error(lin, "SO(1,3)", "V", "V", x, 8)
    assert res.spread == softsym.defaults.SAMPLE_SPREAD and "spread" in res.sampler
    assert math.isfinite(res.mean) and res.mean > 0.05
    ok = equivariance_error(lambda v: 2.0 * v, "SO(1,3)", "V", "V", x, 8, spread=1.0)
    assert ok.max < 1e-12 and ok.spread == 1.0


# ---------------------------------------------------------------- Lie derivative vs finite differences
def test_lie_derivative_matches_finite_differences():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 9)).double()
    g = softsym.group("SO(3)")
    rin, rout = softsym.rep("2V", g), softsym.rep("V**2", g)
    x = torch.randn(5, 6, dtype=torch.float64)
    for a in g.lie_algebra:
        lie = lie_derivative(net, rin, rout, a, x)
        h = 1e-5
        with torch.no_grad():
            yp = net(rin.rho(torch.linalg.matrix_exp(h * a)).apply(x))
            ym = net(rin.rho(torch.linalg.matrix_exp(-h * a)).apply(x))
            fd = (yp - ym) / (2 * h) - rout.drho(a).apply(net(x))
        assert lie.abs().max() > 1e-2  # the map is not equivariant
        assert (lie - fd).abs().max() < 1e-5
        fd2 = lie_derivative(net, rin, rout, a, x, method="fd")
        assert (lie - fd2).abs().max() < 1e-5


def test_lie_derivative_float32_model_actions_in_float64():
    model = BasisModel("O(3)", "2V", "V").float()
    x = torch.randn(16, 6, dtype=torch.float64)
    res = lie_derivative_error(model, "SO(3)", "2V", "V", x)
    assert res.dtype == "torch.float32" and res.max < 1e-5
    eq = equivariance_error(model, "O(3)", "2V", "V", x, 8)
    assert eq.max < 1e-5


# ---------------------------------------------------------------- meters
def test_meters_accumulate_like_one_batch(x3):
    lin = torch.nn.Linear(3, 3).double()
    meter = EquivarianceMeter("O(3)", "V", "V", 8, seed=3)
    meter.update(lin, x3[:10])
    meter.update(lin, x3[10:])
    whole = equivariance_error(lin, "O(3)", "V", "V", x3, 8, seed=3)
    got = meter.compute()
    assert abs(got.mean - whole.mean) < 1e-12 and abs(got.plain_max - whole.plain_max) < 1e-12
    lm = LieDerivativeMeter("SO(3)", "V", "V")
    lm.update(lin, x3[:7])
    lm.update(lin, x3[7:])
    ref = lie_derivative_error(lin, "SO(3)", "V", "V", x3)
    assert abs(lm.compute().max - ref.max) < 1e-12
    meter.reset()
    with pytest.raises(ConfigError):
        meter.compute()


def test_eval_mode_is_restored(x3):
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5)).double()
    net.train()
    a = equivariance_error(net, "O(3)", "V", "V", x3, 4)
    b = equivariance_error(net, "O(3)", "V", "V", x3, 4)
    assert net.training and a.mean == b.mean  # deterministic: dropout off during the measurement


# ---------------------------------------------------------------- subspace energy
def test_subspace_energy():
    g = softsym.group("O(3)")
    basis = softsym.equivariant_basis(softsym.Hom(softsym.rep("V", g), softsym.rep("V**2", g)))
    w = torch.randn(9, 3, dtype=torch.float64)
    e = subspace_energy(w, basis)
    assert 0.0 <= e < 0.5
    pw = basis.project(w.reshape(-1)).reshape(9, 3)
    if basis.dim:
        assert abs(subspace_energy(pw, basis) - 1.0) < 1e-12
    b2 = softsym.equivariant_basis(softsym.Hom(softsym.rep("V", g), softsym.rep("V", g)))
    assert abs(subspace_energy(torch.eye(3), b2) - 1.0) < 1e-12
    lin = torch.nn.Linear(3, 3, bias=False)
    assert 0 <= subspace_energy(lin, b2) <= 1


def test_subspace_energy_refuses_non_finite_weights():
    g = softsym.group("O(3)")
    b2 = softsym.equivariant_basis(softsym.Hom(softsym.rep("V", g), softsym.rep("V", g)))
    bb = softsym.equivariant_basis(softsym.rep("V", g))
    assert subspace_energy(torch.eye(3) + torch.diag(torch.tensor([0.0, 0.0, 1.0])), b2) == pytest.approx(16 / 18)
    with pytest.raises(DataError, match="NaN"):  # was 1.0 ("fully equivariant")
        subspace_energy(torch.full((3, 3), float("nan")), b2)
    with pytest.raises(DataError, match="bias"):
        subspace_energy(torch.eye(3), b2, bias=torch.tensor([0.0, float("inf"), 0.0]), bias_basis=bb)


# ---------------------------------------------------------------- errors
def test_clear_errors(x3):
    with pytest.raises(ModelError, match="size 3"):
        equivariance_error(lambda v: v[:, :2], "O(3)", "V", "V", x3)
    with pytest.raises(ModelError, match="NaN"):
        equivariance_error(lambda v: v * float("nan"), "O(3)", "V", "V", x3)
    with pytest.raises(DataError, match="size 3"):
        equivariance_error(_norm_scaled, "O(3)", "V", "V", torch.randn(4, 5))
    with pytest.raises(ModelError, match="failed"):
        equivariance_error(torch.nn.Linear(4, 3).double(), "O(3)", "V", "V", x3)
    with pytest.raises(ConfigError):
        equivariance_error(_norm_scaled, "O(3)", "V", "V", x3, n_samples=0)


class _CubeFn(torch.autograd.Function):
    """x -> x^3 with a hand-written backward on a detached saved tensor: no forward-mode rule, and double
    backward silently misses the dependence of 3x^2 on x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x.detach())
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x ** 2


def test_lie_derivative_auto_falls_back_when_jvp_is_unsupported():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 3).double()
    model = lambda v: _CubeFn.apply(lin(v))  # noqa: E731
    x = torch.randn(6, 3, dtype=torch.float64)
    auto = lie_derivative_error(model, "SO(3)", "V", "V", x)
    assert auto.method in ("vjp", "fd")
    ref = lie_derivative_error(lambda v: lin(v) ** 3, "SO(3)", "V", "V", x, method="jvp")
    assert ref.method == "jvp" and abs(auto.max - ref.max) < 1e-8 * ref.max
    exact = lambda v: _CubeFn.apply(v.norm(dim=1, keepdim=True)) * v  # noqa: E731  (equivariant)
    res = lie_derivative_error(exact, "SO(3)", "V", "V", x)
    assert res.max < 1e-10


def test_lie_meter_resolves_the_method_again_for_another_model():
    """'auto' picked jvp for the first model; a second, detaching model must not inherit it (jvp would miss the
    detached path and score an exactly equivariant map ~1)."""
    torch.manual_seed(0)
    x = torch.randn(32, 3, dtype=torch.float64)
    smooth = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()

    def detaching(v):  # exactly O(3)-equivariant, but forward-mode AD sees a zero tangent
        return 2.0 * v.detach() + 0.0 * v

    meter = LieDerivativeMeter("SO(3)", "V", "V")
    meter.update(smooth, x)
    assert meter.compute().method == "jvp"
    assert meter.compute().max > 1e-2
    meter.reset()
    meter.update(detaching, x)
    res = meter.compute()
    assert res.method == "fd"
    assert res.max < 1e-8
    # without a reset, a new model also gets a fresh decision
    meter2 = LieDerivativeMeter("SO(3)", "V", "V")
    meter2.update(smooth, x)
    meter2.update(detaching, x)
    assert meter2.method_used == "fd"
