"""Session 11: fixes from the sixth round of user passes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_fit_json_reports_an_interrupted_run(tmp_path: Path):
    from softsym.cli.train import _interrupted_summary

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"epoch": e, "val_mse": 1.0}) for e in (1, 2, 3)) + "\n")
    (run / "last.pt").write_bytes(b"x")
    out = _interrupted_summary(run, KeyboardInterrupt("interrupted after epoch 3"))
    assert out["finished"] is False and out["interrupted"] is True
    assert out["epoch"] == 3 and out["run_dir"] == str(run) and "--resume" in out["resume"]
    none = _interrupted_summary(None, KeyboardInterrupt())
    assert none["epoch"] is None and none["resume"] is None and none["message"] == "interrupted"


# ---------------------------------------------------------------- any-model pass (up42)
import math  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import softsym  # noqa: E402
from softsym.errors import ConfigError, DataError  # noqa: E402
from softsym.wrappers import DegenerateFrameWarning, FrameAverage  # noqa: E402


class _PerPointSum(torch.nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.m = torch.nn.Sequential(torch.nn.Linear(cin, 16), torch.nn.Tanh(), torch.nn.Linear(16, cout))

    def forward(self, p):
        return self.m(p).sum(1)


class _Flat(torch.nn.Module):
    def __init__(self, inner, n, d):
        super().__init__()
        self.inner, self.n, self.d = inner, n, d

    def forward(self, x):
        return self.inner(x.reshape(x.shape[0], self.n, self.d)).reshape(x.shape[0], -1)


def test_frame_average_survives_meta_construction_and_to_empty():
    torch.manual_seed(0)
    ref = FrameAverage(_PerPointSum(2, 2), "O(2)", output="vector").double()
    x = torch.randn(3, 6, 2, dtype=torch.float64)
    sd = ref.state_dict()
    with torch.device("meta"):
        m = FrameAverage(_PerPointSum(2, 2), "O(2)", output="vector")
    m = m.to_empty(device="cpu").double()
    m.load_state_dict(sd)
    assert torch.equal(m.signs, ref.signs)
    assert (m(x) - ref(x)).abs().max() == 0
    m2 = FrameAverage(_PerPointSum(2, 2), "O(2)", output="vector").double().to("meta").to_empty(device="cpu")
    m2.load_state_dict(sd)
    assert (m2(x) - ref(x)).abs().max() == 0


class _Bf16Inside(torch.nn.Module):
    """v -> 2 v tanh(|v|^2), exactly O(2)-equivariant, with the linear part computed in bf16 (autocast)."""

    def __init__(self):
        super().__init__()
        self.l = torch.nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.l.weight.copy_(2 * torch.eye(2))

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = self.l(x)
        return y.float() * torch.tanh((x * x).sum(1, keepdim=True))


def test_lie_auto_keeps_jvp_when_finite_differences_are_round_off():
    from softsym.metrics import lie_derivative_error

    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    res = lie_derivative_error(_Bf16Inside(), "SO(2)", "V", "V", x)
    assert res.method == "jvp" and res.max < 1e-3


def test_lie_auto_still_catches_a_detaching_model():
    from softsym.metrics import lie_derivative_error

    x = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    res = lie_derivative_error(lambda v: 2 * v.detach(), "SO(3)", "V", "V", x)
    assert res.method == "fd" and res.max < 1e-8


def test_all_zero_inputs_with_round_off_outputs_get_the_note(tmp_path):
    out = softsym.check(lambda v: 1e-17 * torch.randn_like(v), "SO(2)", "V", "V", inputs=torch.zeros(4, 2,
                                                                                                      dtype=torch.float64))
    assert out["SO(2)"].note and "round-off" in out["SO(2)"].note


def test_check_keyword_aliases_and_lookup_by_any_spec():
    f = lambda v: 2 * v  # noqa: E731
    rep = softsym.check(model=f, group="Lorentz", rep_in="V", rep_out="V")
    assert rep["Lorentz"].verdict == "exact" and rep["O(1,3)"] is rep["Lorentz"]
    assert rep[softsym.group("O(1,3)")] is rep["O(1,3)"]
    with pytest.raises(ConfigError, match="not both"):
        softsym.check(f, "O(3)", "V", "V", group="SO(3)")
    with pytest.raises(ConfigError, match="rep_out"):
        softsym.check(f, "O(3)", "V")
    with pytest.raises(KeyError):
        rep["SO(3)"]


def test_lie_derivative_error_accepts_n_samples_like_equivariance_error():
    from softsym.metrics import lie_derivative_error

    x = torch.randn(4, 3, dtype=torch.float64)
    assert lie_derivative_error(lambda v: v, "SO(3)", "V", "V", x, 4).max < 1e-12
    with pytest.raises(ConfigError):
        lie_derivative_error(lambda v: v, "SO(3)", "V", "V", x, n_samples=0)


def test_check_refuses_garbage_inputs_file_with_a_plain_message(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not numpy at all")
    with pytest.raises(DataError) as e:
        softsym.check(lambda v: v, "O(3)", "V", "V", inputs=bad)
    assert "pickle" not in str(e.value) and "np.savez" in str(e.value)


def test_check_refuses_a_bare_point_cloud_wrapper_with_a_hint():
    fa = FrameAverage(_PerPointSum(2, 2), "O(2)", output="vector")
    with pytest.raises(ConfigError, match="point clouds"):
        softsym.check(fa, "O(2)", "5V", "V")


def test_check_warns_once_about_degenerate_clouds():
    torch.manual_seed(0)
    model = _Flat(FrameAverage(_PerPointSum(2, 2).double(), "O(2)", output="vector"), 5, 2)
    th = torch.arange(5, dtype=torch.float64) * (2 * math.pi / 5)
    pent = torch.stack([th.cos(), th.sin()], 1).reshape(1, 10)
    x = torch.cat([pent, torch.randn(3, 10, dtype=torch.float64)])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        softsym.check(model, ["O(2)", "SO(2)"], "5V", "V", inputs=x)
    deg = [r for r in w if issubclass(r.category, DegenerateFrameWarning)]
    assert len(deg) == 1 and "some of the checked point clouds" in str(deg[0].message)


# ---------------------------------------------------------------- models pass (up43)
@pytest.mark.parametrize("cands,full", [(["SO(3)", "O(3)"], "O(3)"), (["SO(2)", "O(2)", "D(4)"], "O(2)"),
                                        (["C(3)", "D(3)"], "D(3)"), (["Z(5)", "S(5)"], "S(5)"),
                                        (["O(2)@z", "O(3)", "SO(3)"], "O(3)")])
def test_soft_emlp_default_full_group_is_the_containing_candidate(cands, full):
    from softsym.nn import SoftEMLP

    m = SoftEMLP("V", "V", cands, ch=16, num_layers=1)
    assert m.full_group.name == full


def test_project_zeroes_the_swish_path_so_the_model_is_exact():
    from softsym.metrics import equivariance_error
    from softsym.nn import SoftEMLP

    torch.manual_seed(0)
    m = SoftEMLP("V+V**2", "V", ["O(3)", "O(2)@z", "S(3)"], ch=24, num_layers=2).double()
    with torch.no_grad():
        for layer in m.linear_layers():
            layer.weight.normal_()
            layer.bias.normal_()
    x = torch.randn(16, 12, dtype=torch.float64)
    m.project_(0, swish_path=False)
    assert equivariance_error(m, "O(3)", "V+V**2", "V", x, 8).max > 1e-6  # the swish path alone breaks it
    m.project_(0)
    assert float(m.residuals()[0]) < 1e-20
    assert equivariance_error(m, "O(3)", "V+V**2", "V", x, 8).max < 1e-10


def test_train_config_unknown_field_is_a_config_error_with_a_hint():
    from softsym import TrainConfig

    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        TrainConfig(learning_rate=1e-3)
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        TrainConfig(epoch=3)
    assert TrainConfig(lr=1e-2, epochs=3).epochs == 3


def test_soft_symmetry_scalar_set_strengths_and_bool_refused():
    from softsym.soft import SoftSymmetry

    s = SoftSymmetry(["O(3)", "SO(3)"])
    s.set_strengths(3.0)
    assert s.strengths.tolist() == [3.0, 3.0]
    for bad in (True, [1.0, False], torch.tensor([True, False])):
        with pytest.raises(ConfigError, match="not"):
            SoftSymmetry(["O(3)", "SO(3)"], strengths=bad)


# ---------------------------------------------------------------- foundation pass (up41)
def test_projector_matmul_has_matrix_semantics():
    basis = softsym.equivariant_basis(softsym.rep("V**2", "SO(3)"))
    P, Q = softsym.Projector(basis), basis.Q
    M = torch.randn(9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(P @ M, Q @ Q.T @ M, atol=1e-12)
    assert torch.allclose(P @ M[:, 0], Q @ Q.T @ M[:, 0], atol=1e-12)
    from softsym.errors import RepError

    with pytest.raises(RepError, match="P\\(v\\)"):
        P @ torch.zeros(2, 9, 9, dtype=torch.float64)


def test_large_named_finite_groups_are_sampled_exactly_uniformly():
    g = softsym.group("S(40)").sample(4000, seed=1)
    assert bool((g.sum(1) == 1).all() and (g.sum(2) == 1).all())
    p00 = float((g[:, :, 0].argmax(1) == 0).double().mean())
    assert abs(p00 - 1 / 40) < 4 * math.sqrt(1 / 40 * 39 / 40 / 4000)  # the random walk gave 0.046
    z = softsym.group("Z(300)")
    shifts = z.sample(500, seed=1)[:, :, 0].argmax(1).double()
    assert abs(float(shifts.mean()) - 149.5) < 4 * 86.6 / math.sqrt(500)  # uniform on 0..299 (the walk: 7.5)
    gen = torch.as_tensor(z.discrete_np[0])
    e = z.sample(1, seed=3)[0]
    k = int(e[:, 0].argmax())
    assert torch.equal(e, torch.linalg.matrix_power(gen, k))  # a power of the generator
    dets = torch.linalg.det(softsym.group("D(30000)").sample(400, seed=0))
    assert 100 < int((dets < 0).sum()) < 300  # reflections are drawn too
    with pytest.raises(softsym.SoftsymError, match="300 elements"):
        z.elements()


def test_c_and_d_of_large_order_build_and_solve():
    assert softsym.equivariant_basis(softsym.rep("V**2", "C(10001)")).dim == 2
    assert softsym.equivariant_basis(softsym.rep("V**2", "D(30000)")).dim == 1


def test_huge_sample_requests_are_a_group_error():
    with pytest.raises(softsym.SoftsymError, match="GB"):
        softsym.group("SO(3)").sample(10**10)


def test_identity_permutation_generator_warns_about_cycle_notation():
    with pytest.warns(UserWarning, match="cycle"):
        softsym.PermutationGroup([(0, 1, 2)])


# ---------------------------------------------------------------- CLI pass (up44)
def _cli(*args):
    from typer.testing import CliRunner

    from softsym.cli import app

    return CliRunner().invoke(app, list(args))


def test_check_cli_semicolon_groups_json_stdout_duplicates_and_spread(tmp_path):
    mod = tmp_path / "mods.py"
    mod.write_text("def equiv():\n    return lambda x: 2 * x\n")
    res = _cli("check", f"{mod}:equiv", "-g", "O(3);SO(3)", "--rep-in", "V", "--rep-out", "V", "--json", "-")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [r["group"] for r in data["results"]] == ["O(3)", "SO(3)"]
    assert {r["verdict"] for r in data["results"]} == {"exact"}
    dup = _cli("check", f"{mod}:equiv", "-g", "O(3)", "-g", "o(3)", "--rep-in", "V", "--rep-out", "V")
    assert dup.exit_code == 2 and "twice" in dup.output
    neg = _cli("check", f"{mod}:equiv", "-g", "O(3)", "--spread", "-5", "--rep-in", "V", "--rep-out", "V")
    assert neg.exit_code == 2 and "spread" in neg.output


def test_exact_null_space_gap_is_inf_not_a_sentinel():
    from softsym.reps.solve import _spectrum

    _, gap = _spectrum(np.array([0.0, 1.0, 2.0]), 1)
    assert gap == math.inf


def test_spawned_workers_watch_their_parent_and_take_forwarded_stops():
    from softsym import parallel
    from softsym.train import _GracefulInterrupt

    assert callable(parallel._exit_with_parent)
    with _GracefulInterrupt(enabled=True, sigterm=False) as gi:
        assert parallel.STOP_TARGETS[-1] is gi
        parallel._stop_requested_by_parent(None, None)  # first: stop after this epoch
        assert gi.requested
        with pytest.raises(KeyboardInterrupt):
            parallel._stop_requested_by_parent(None, None)  # second: at once
    assert gi not in parallel.STOP_TARGETS
    parallel._stop_requested_by_parent(None, None)  # before the loop: kept for it
    with _GracefulInterrupt(enabled=True, sigterm=False) as gi:
        assert gi.requested
    parallel._stop_requested_by_parent(None, None)
    with pytest.raises(KeyboardInterrupt):
        parallel._stop_requested_by_parent(None, None)  # twice before the loop: at once
    assert parallel.take_pending_stop() is True and parallel.take_pending_stop() is False
