"""Penalties for any model: sampled, Lie-derivative and linear-projection residuals share SoftSymmetry."""
from __future__ import annotations

import pytest
import torch

import softsym
from softsym.errors import ConfigError, DataError, ModelError, RepError
from softsym.metrics import equivariance_error, lie_derivative
from softsym.soft import SoftSymmetry
from softsym.soft.lie import LiePenalty
from softsym.soft.linear_projection import LinearProjectionPenalty
from softsym.soft.sampled import SampledPenalty


pytestmark = pytest.mark.usefixtures("one_thread")


def _equivariant(x):
    return x * x.norm(dim=1, keepdim=True)


def _mlp(n_in, n_out, seed=0, hidden=16):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.Tanh(),
                               torch.nn.Linear(hidden, n_out)).double()


# ---------------------------------------------------------------- sampled penalty
def test_sampled_penalty_residuals():
    sym = SoftSymmetry(["O(3)", "O(2)@z", "S(3)"])
    pen = SampledPenalty(sym, "V", "V", n_samples=2, seed=0)
    x = torch.randn(32, 3, dtype=torch.float64)
    r0 = pen.residuals(_equivariant, x)
    assert r0.shape == (3,) and float(r0.max()) < 1e-24
    net = _mlp(3, 3)
    r = pen.residuals(net, x)
    assert r.shape == (3,) and bool((r > 1e-3).all())
    total = pen(net, x)
    total.backward()
    assert net[0].weight.grad is not None and float(net[0].weight.grad.abs().sum()) > 0


def test_sampled_penalty_is_scale_free_and_float32():
    """normalize="output" is scale-free; the default is a mean over outputs, so it scales like the outputs^2."""
    x = torch.randn(64, 3, dtype=torch.float64)
    net = _mlp(3, 3)
    big = lambda v: 1000.0 * net(v)  # noqa: E731
    sym = SoftSymmetry(["O(3)"])
    a = SampledPenalty(sym, "V", "V", seed=1).residuals(net, x)
    b = SampledPenalty(sym, "V", "V", seed=1).residuals(big, x)
    assert torch.allclose(b, 1e6 * a, rtol=1e-10)
    ao = SampledPenalty(sym, "V", "V", seed=1, normalize="output").residuals(net, x)
    bo = SampledPenalty(sym, "V", "V", seed=1, normalize="output").residuals(big, x)
    assert torch.allclose(ao, bo, rtol=1e-10)
    assert torch.allclose(ao, a * 3 / net(x).pow(2).sum(1).mean(), rtol=1e-10)
    net32 = _mlp(3, 3).float()
    r32 = SampledPenalty(sym, "V", "V", seed=1).residuals(net32, x.float())
    assert r32.dtype == torch.float32 and torch.allclose(r32.double(), a, rtol=1e-4)


def test_sampled_penalty_reps_per_candidate_and_errors():
    sym = SoftSymmetry(["O(3)", "SO(3)"])
    pen = SampledPenalty(sym, ["V", softsym.V], ["V", "V"])
    assert [r.group.name for r in pen.rep_ins] == ["O(3)", "SO(3)"]
    with pytest.raises(ConfigError, match="2 candidate groups"):
        SampledPenalty(sym, ["V"], "V")
    with pytest.raises(RepError, match="candidate SO"):
        SampledPenalty(sym, softsym.rep("V", "O(3)"), "V")
    with pytest.raises(ConfigError, match="different sizes"):
        SampledPenalty(SoftSymmetry(["O(3)", "O(2)"]), "V", "V")
    with pytest.raises(DataError, match="inputs must be"):
        pen.residuals(_equivariant, torch.randn(4, 5, dtype=torch.float64))


# ---------------------------------------------------------------- Lie penalty
def test_lie_penalty_matches_metric():
    sym = SoftSymmetry(["SO(3)", "O(2)@z"])
    pen = LiePenalty(sym, "V", "V")
    x = torch.randn(16, 3, dtype=torch.float64)
    assert float(pen.residuals(_equivariant, x).max()) < 1e-24
    net = _mlp(3, 3)
    r = pen.residuals(net, x)
    g = softsym.group("SO(3)")
    rep = softsym.rep("V", g)
    gens = g.lie_algebra
    ref = torch.stack([lie_derivative(net, rep, rep, a, x).pow(2).sum(1).mean() for a in gens]).mean()
    assert torch.allclose(r[0].detach(), ref / 3, rtol=1e-10)  # mean over the 3 outputs
    ro = LiePenalty(sym, "V", "V", normalize="output").residuals(net, x)
    assert torch.allclose(ro[0].detach(), ref / net(x).pow(2).sum(1).mean(), rtol=1e-10)
    with pytest.raises(ConfigError, match="normalize must be"):
        LiePenalty(sym, "V", "V", normalize="batch")
    pen(net, x).backward()
    assert float(net[0].weight.grad.abs().sum()) > 0
    with pytest.raises(ConfigError, match="no Lie algebra"):
        LiePenalty(SoftSymmetry(["S(3)"]), "V", "V")


def test_lie_penalty_vjp_under_no_grad_matches_jvp():
    # validation-time residuals: the double-backward path needs autograd even when the caller disabled it
    sym = SoftSymmetry(["SO(3)", "O(2)@z"])
    net = _mlp(3, 3)
    x = torch.randn(8, 3, dtype=torch.float64)
    ref = LiePenalty(sym, "V", "V").residuals(net, x).detach()
    with torch.no_grad():
        r = LiePenalty(sym, "V", "V", method="vjp").residuals(net, x)
    assert not r.requires_grad and torch.allclose(r, ref, rtol=1e-12)


@pytest.mark.parametrize("make", [lambda sym: SampledPenalty(sym, "V", "V", seed=0),
                                  lambda sym: LiePenalty(sym, "V", "V")])
def test_penalty_input_and_output_errors(make):
    pen = make(SoftSymmetry(["SO(3)"]))
    x = torch.randn(4, 3, dtype=torch.float64)
    assert float(pen.residuals(_equivariant, x)) < 1e-24
    with pytest.raises(DataError, match="empty"):
        pen.residuals(_equivariant, x[:0])
    with pytest.raises(DataError, match="finite"):
        pen.residuals(_equivariant, torch.full((4, 3), float("nan"), dtype=torch.float64))
    with pytest.raises(ModelError, match="returned tuple"):
        pen.residuals(lambda v: (v,), x)


# ---------------------------------------------------------------- linear projection penalty
def test_linear_projection_penalty_matches_dense_projection():
    net = torch.nn.Sequential(torch.nn.Linear(3, 9), torch.nn.Tanh(), torch.nn.Linear(9, 3)).double()
    sym = SoftSymmetry(["O(3)", "SO(3)"])
    pen = LinearProjectionPenalty(net, sym, {"0": ("V", "V**2"), "2": ("V**2", "V")})
    r = pen.residuals()
    assert r.shape == (2,)
    for j, gname in enumerate(["O(3)", "SO(3)"]):
        g = softsym.group(gname)
        total = 0.0
        for layer, (ri, ro) in ((net[0], ("V", "V**2")), (net[2], ("V**2", "V"))):
            rin, rout = softsym.rep(ri, g), softsym.rep(ro, g)
            q = softsym.equivariant_basis(softsym.Hom(rin, rout)).Q
            w = layer.weight.detach().reshape(-1)
            total += 0.5 * float((w - q @ (q.T @ w)).pow(2).sum())
            qb = softsym.equivariant_basis(rout).Q
            b = layer.bias.detach()
            total += 0.5 * float((b - qb @ (qb.T @ b)).pow(2).sum())
        assert abs(float(r[j]) - total) < 1e-10
    assert float(r[1]) <= float(r[0]) + 1e-12  # SO(3) allows more maps than O(3)


def test_linear_projection_penalty_descent_reaches_equivariance():
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 3).double()
    model = torch.nn.Sequential(layer)
    sym = SoftSymmetry(["O(3)"], strengths=1.0)
    pen = LinearProjectionPenalty(model, sym, {"0": ("2V", "V")})
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        pen().backward()
        opt.step()
    assert float(pen.residuals()) < 1e-12
    x = torch.randn(8, 6, dtype=torch.float64)
    assert equivariance_error(model, "O(3)", "2V", "V", x).max < 1e-6


def test_linear_projection_penalty_config_errors():
    net = torch.nn.Sequential(torch.nn.Linear(3, 9), torch.nn.ReLU())
    sym = SoftSymmetry(["O(3)"])
    with pytest.raises(ConfigError, match="layer '0' is Linear\\(3 -> 9\\)"):
        LinearProjectionPenalty(net, sym, {"0": ("V", "V")})
    with pytest.raises(ConfigError, match="not found"):
        LinearProjectionPenalty(net, sym, {"fc": ("V", "V**2")})
    with pytest.raises(ConfigError, match="not an nn.Linear"):
        LinearProjectionPenalty(net, sym, {"1": ("V", "V**2")})


# ---------------------------------------------------------------- strength lowers the error
def _train_with_strength(strength, penalty_cls, steps=200):
    """Fit a non-equivariant target (x|x| + a constant) with a penalty of the given strength."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, dtype=torch.float64, generator=gen)
    y = _equivariant(x) + torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)
    net = _mlp(3, 3, seed=0, hidden=32)
    sym = SoftSymmetry(["O(3)"] if penalty_cls is SampledPenalty else ["SO(3)"], strengths=strength)
    pen = penalty_cls(sym, "V", "V", seed=0) if penalty_cls is SampledPenalty else penalty_cls(sym, "V", "V")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        out = net(x)
        loss = (out - y).pow(2).mean()
        if strength:
            res = pen.residuals(net, x) if penalty_cls is LiePenalty else pen.residuals(net, x, out)
            loss = loss + sym.penalty(res)
        loss.backward()
        opt.step()
    xt = torch.randn(64, 3, dtype=torch.float64, generator=gen)
    group = "O(3)" if penalty_cls is SampledPenalty else "SO(3)"
    return equivariance_error(net, group, "V", "V", xt, 16, seed=1).mean


@pytest.mark.parametrize("penalty_cls", [SampledPenalty, LiePenalty])
def test_strength_lowers_error(penalty_cls):
    errors = [_train_with_strength(s, penalty_cls) for s in (0.0, 1.0, 100.0)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < errors[0] / 5, errors
