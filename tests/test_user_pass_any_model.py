"""Regression tests from a user pass over the "symmetry for any model" API (metrics, penalties, wrappers, check).

Each test pins a bug found by exercising the API with unusual but legitimate inputs; every one failed before its fix.
"""
from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import softsym
from softsym import V, Hom
from softsym.check import check
from softsym.cli import app
from softsym.errors import ConfigError, DataError, SoftsymError
from softsym.metrics import equivariance_error, lie_derivative, lie_derivative_error, subspace_energy
from softsym.soft import SoftSymmetry
from softsym.soft.lie import LiePenalty
from softsym.soft.linear_projection import LinearProjectionPenalty
from softsym.soft.sampled import SampledPenalty
from softsym.wrappers import Canonicalize, FrameAverage, GroupAverage, SortCanonicalize

pytestmark = pytest.mark.usefixtures("one_thread")


def _norm_model(v):
    return v * v.norm(dim=1, keepdim=True)


def _haar(d, gen, special=False):
    q, r = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
    q = q * torch.sign(torch.diagonal(r))
    if special and torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# ---------------------------------------------------------------- metrics
def test_lie_metrics_refuse_complex_groups():
    """SU(2): the Lie metrics cast the complex generators to float64 (dropping the imaginary part, with only a torch
    UserWarning) and reported a meaningless result; equivariance_error already refused complex groups."""
    x = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ConfigError, match="complex"):
        lie_derivative_error(lambda v: v, "SU(2)", "V", "V", x)
    g = softsym.group("SU(2)")
    with pytest.raises(ConfigError, match="complex"):
        lie_derivative(lambda v: v, "V", "V", g.lie_algebra[0], x, group="SU(2)")


@pytest.mark.parametrize("spread", ["wide", float("nan"), float("inf"), -1.0])
def test_bad_spread_is_a_config_error(spread):
    """spread='wide' raised ValueError, NaN / inf surfaced as a misleading 'the model returned NaN' ModelError, and a
    negative spread was accepted silently."""
    x = torch.randn(4, 4, dtype=torch.float64)
    with pytest.raises(ConfigError, match="spread must be a finite number >= 0"):
        equivariance_error(lambda v: 2 * v, "SO(1,3)", "V", "V", x, spread=spread)
    with pytest.raises(ConfigError, match="spread"):
        SampledPenalty(SoftSymmetry(["SO(1,3)"]), "V", "V", spread=spread)


def test_spread_zero_and_valid_spreads_still_work():
    x = torch.randn(4, 4, dtype=torch.float64)
    r = equivariance_error(lambda v: 2 * v, "SO(1,3)", "V", "V", x, spread=0)
    assert r.spread == 0.0 and r.max < 1e-14
    r = equivariance_error(lambda v: 2 * v, "SL(3)", "V", "V", x[:, :3], spread=np.float64(1.0))
    assert r.spread == 1.0 and "spread 1" in r.sampler


def test_subspace_energy_of_complex_weight_keeps_imaginary_part():
    """A complex W was cast to float64, silently dropping its imaginary part: W = I + i J (J the anti-diagonal) under
    O(3) gave 1.0 instead of (||I||^2 + tr(J)^2 / 3) / (||I||^2 + ||J||^2) = (3 + 1/3) / 6."""
    basis = softsym.equivariant_basis(Hom(V, V)(softsym.group("O(3)")))
    eye = torch.eye(3, dtype=torch.float64)
    w = eye + 1j * eye.flip(0)
    assert subspace_energy(w, basis) == pytest.approx(5 / 9, abs=1e-12)
    assert subspace_energy(1j * eye, basis) == pytest.approx(1.0, abs=1e-12)
    # complex basis (SU(2)): unchanged behaviour
    bu = softsym.equivariant_basis(Hom(V, V)(softsym.group("SU(2)")))
    assert subspace_energy(torch.eye(2) + 1j * torch.eye(2).flip(0), bu) == pytest.approx(0.5, abs=1e-12)


def test_subspace_energy_needs_a_basis_object():
    """basis='O(3)' raised AttributeError: 'str' object has no attribute 'size'."""
    with pytest.raises(ConfigError, match="basis must be a softsym Basis"):
        subspace_energy(torch.eye(3), "O(3)")


# ---------------------------------------------------------------- penalties and SoftSymmetry
def test_soft_symmetry_bad_strengths_are_config_errors():
    """Non-numeric strengths raised TypeError from torch; penalty() of a list raised AttributeError."""
    for bad in ("strong", None):
        with pytest.raises(ConfigError, match="strengths"):
            SoftSymmetry(["O(3)"], strengths=bad)
    sym = SoftSymmetry(["O(3)", "SO(3)"], strengths=[1.0, 2.0])
    with pytest.raises(ConfigError, match="strengths"):
        sym.set_strengths("x")
    with pytest.raises(ConfigError, match="tensor of 2 residuals"):
        sym.penalty([1.0, 2.0])
    assert float(sym.penalty(torch.tensor([1.0, 1.0], dtype=torch.float64))) == 3.0


def test_penalty_option_errors_are_softsym_errors():
    """rep_ins=3 raised TypeError, seed='a' TypeError / ValueError, layers given as a list AttributeError."""
    sym = SoftSymmetry(["O(3)"])
    with pytest.raises(ConfigError, match="rep spec"):
        SampledPenalty(sym, 3, "V")
    with pytest.raises(ConfigError, match="seed"):
        SampledPenalty(sym, "V", "V", seed="a")
    with pytest.raises(ConfigError, match="seed"):
        LiePenalty(sym, "V", "V", seed="a")
    with pytest.raises(ConfigError, match="layers must be a dict"):
        LinearProjectionPenalty(torch.nn.Linear(3, 3), sym, [("", ("V", "V"))])


def test_lie_penalty_accepts_numpy_integer_n_generators():
    """n_generators=np.int64(2) (e.g. from a numpy config grid) was refused as 'not a positive integer'."""
    sym = SoftSymmetry(["O(3)"])
    x = torch.randn(5, 3, dtype=torch.float64)
    lin = torch.nn.Linear(3, 3).double()
    a = LiePenalty(sym, "V", "V", n_generators=np.int64(2), seed=3).residuals(lin, x)
    b = LiePenalty(sym, "V", "V", n_generators=2, seed=3).residuals(lin, x)
    assert torch.equal(a, b)


def test_sampled_penalty_accepts_numpy_generator_seed():
    sym = SoftSymmetry(["O(3)"])
    x = torch.randn(5, 3, dtype=torch.float64)
    lin = torch.nn.Linear(3, 3).double()
    a = SampledPenalty(sym, "V", "V", seed=np.random.default_rng(7)).residuals(lin, x)
    b = SampledPenalty(sym, "V", "V", seed=7).residuals(lin, x)
    assert torch.equal(a, b)


# ---------------------------------------------------------------- frame averaging / canonicalization
def _cloud_net(c, out, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Sequential(torch.nn.Linear(c, 16), torch.nn.Tanh(), torch.nn.Linear(16, out)).double()
    return lambda p: lin(p).mean(1)


@pytest.mark.parametrize("group", ["O(3)", "E(3)", "SE(3)"])
@pytest.mark.parametrize("n_points", [3, 6])
def test_canonicalize_planar_clouds_are_exact(group, n_points):
    """Planar clouds in 3-d (always the case for 3 points): the normal axis has round-off coordinates (~1e-16) whose
    third moment has a random sign, and the tie test was relative to that axis' own |.|^3, so the sign was taken from
    noise -- vector outputs were off by O(1) (0.65 relative) for about one cloud in four."""
    gen = torch.Generator().manual_seed(0)
    b = 16
    plane = torch.randn(b, n_points, 2, dtype=torch.float64, generator=gen)
    basis = torch.stack([_haar(3, gen)[:, :2] for _ in range(b)])  # (B, 3, 2)
    x = plane @ basis.transpose(1, 2) + torch.randn(b, 1, 3, dtype=torch.float64, generator=gen)
    ca = Canonicalize(_cloud_net(3, 3), group, output="vector")
    special, trans = group.startswith("S"), "E" in group
    y = ca(x)
    assert ca.last_degenerate == 0
    for _ in range(3):
        r = _haar(3, gen, special)
        t = torch.randn(3, dtype=torch.float64, generator=gen) if trans else 0.0
        yg = ca(x @ r.T + t)
        err = (yg - y @ r.T).norm(dim=1) / y.norm(dim=1)
        assert float(err.detach().max()) < 1e-10, err


@pytest.mark.parametrize("cls", [FrameAverage, Canonicalize])
def test_degenerate_cloud_does_not_poison_input_gradients(cls):
    """A batch with one degenerate cloud (coincident points) gave NaN input gradients for *every* cloud: eigh's
    backward divides by the eigenvalue gaps of the whole batched decomposition."""
    gen = torch.Generator().manual_seed(1)
    wrapped = cls(_cloud_net(4, 3), "E(3)", scalar_channels=1, output="vector", warn=False)
    good = torch.randn(1, 5, 4, dtype=torch.float64, generator=gen)
    bad = torch.randn(1, 5, 4, dtype=torch.float64, generator=gen)
    bad[..., :3] = 0.7  # coincident points: the covariance is 0
    x = torch.cat([good, bad]).requires_grad_(True)
    wrapped(x).pow(2).sum().backward()
    assert torch.isfinite(x.grad).all()
    alone = good.clone().requires_grad_(True)
    wrapped(alone).pow(2).sum().backward()
    assert torch.allclose(x.grad[:1], alone.grad, rtol=1e-10, atol=1e-12)
    assert float(alone.grad.abs().max()) > 0


@pytest.mark.parametrize("kwargs", [{"degenerate_tol": "small"}, {"canonical_tol": "x"}, {"canonical_tol": -1.0},
                                    {"seed": "a"}, {"vector_channels": True}, {"degenerate_samples": 8.0}])
def test_frame_options_are_validated(kwargs):
    """degenerate_tol='small' raised TypeError, canonical_tol='x' / seed='a' ValueError; a negative canonical_tol
    and vector_channels=True were accepted."""
    with pytest.raises(ConfigError):
        Canonicalize(lambda p: p.sum(1), "O(3)", **kwargs)


# ---------------------------------------------------------------- other wrappers
def test_sort_canonicalize_bad_inputs_and_options():
    """Complex inputs raised torch's RuntimeError, key='ab' / set_axis='1' TypeError."""
    f = SortCanonicalize(lambda z: z.sum(1))
    with pytest.raises(DataError, match="complex"):
        f(torch.randn(2, 3, dtype=torch.complex64))
    with pytest.raises(DataError):
        f([[1.0, 2.0]])
    with pytest.raises(ConfigError, match="key"):
        SortCanonicalize(lambda z: z, key="ab")
    with pytest.raises(ConfigError, match="set_axis"):
        SortCanonicalize(lambda z: z, set_axis="1")
    g = SortCanonicalize(lambda z: z.flatten(1).cumsum(1), key=np.array([2]))
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    assert torch.equal(g(x), g(x[:, torch.tensor([2, 0, 3, 1])]))


def test_group_average_bad_seed():
    """seed='a' raised numpy's TypeError."""
    with pytest.raises(ConfigError, match="seed"):
        GroupAverage(lambda v: v, "SO(3)", "V", "V", seed="a")


# ---------------------------------------------------------------- check
@pytest.mark.parametrize("kwargs", [{"approx_tol": float("nan")}, {"exact_tol": float("nan")},
                                    {"exact_tol": "tight"}, {"approx_tol": "loose"}, {"seed": None},
                                    {"seed": "a"}, {"seed": -1}])
def test_check_validates_tolerances_and_seed(kwargs):
    """NaN tolerances were accepted (approx_tol=nan still gave verdicts; exact_tol=nan never 'exact'); string
    tolerances and seed=None / 'a' raised ValueError / TypeError."""
    with pytest.raises(ConfigError):
        check(_norm_model, "O(3)", "V", "V", n_inputs=4, lie=False, **kwargs)


def test_check_groups_of_different_dimension():
    """["O(3)", "O(4)"] with rep "V" failed on the second group with 'inputs have shape (4, 3) but rep_in V of O(4)
    has size 4; pass a batch of shape (batch, 4)' -- advice that cannot work for both groups."""
    with pytest.raises(ConfigError, match="size 3 for O\\(3\\) but 4 for O\\(4\\)"):
        check(_norm_model, ["O(3)", "O(4)"], "V", "V", n_inputs=4)


FACTORY = textwrap.dedent(
    """
    import torch

    def lorentz():
        eta = torch.diag(torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=torch.float64))
        return lambda x: x * torch.tanh(((x @ eta) * x).sum(1, keepdim=True))
    """
)


def test_cli_check_spread_option(tmp_path):
    """`softsym check` had no way to set the spread of the non-compact sampler that softsym.check(spread=) takes."""
    path = tmp_path / "lorentz_models.py"
    path.write_text(FACTORY)
    report = tmp_path / "r.json"
    base = ["check", f"{path}:lorentz", "-g", "SO(1,3)", "--rep-in", "V", "--rep-out", "V", "--n-inputs", "8",
            "--no-lie"]
    result = CliRunner().invoke(app, [*base, "--spread", "1.5", "--json", str(report)])
    assert result.exit_code == 0, result.output
    eq = json.loads(report.read_text())["results"][0]["equivariance"]
    assert eq["spread"] == 1.5 and "spread 1.5" in eq["sampler"]
    result = CliRunner().invoke(app, [*base, "--spread", "nan"])
    assert result.exit_code == 2
    assert "spread must be a finite number" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_degenerate_frame_warning_names_the_callers_line():
    """The warning used a fixed stacklevel that pointed into torch's nn/modules/module.py, so every call site shared
    one location (the default filter then shows it once for all of them) and the user's line was never named."""
    fa = FrameAverage(lambda p: p.sum(1), "O(3)", output="vector")
    x = torch.zeros(1, 4, 3, dtype=torch.float64)
    with pytest.warns(softsym.wrappers.DegenerateFrameWarning) as rec:
        fa(x)
    assert rec[0].filename == __file__
    with pytest.warns(softsym.wrappers.DegenerateFrameWarning) as rec:
        fa.frames(x)
    assert rec[0].filename == __file__
