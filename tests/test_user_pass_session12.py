"""Session 12: fixes from the seventh round of user passes, and the leftovers of session 11."""
from __future__ import annotations

import math
import signal
import warnings

import numpy as np
import pytest
import torch

import softsym as ss


# ---------------------------------------------------------------- leftovers of session 11
def test_jvp_through_frame_average_of_a_degenerate_cloud():
    """torch.func.jvp through FrameAverage on a square (repeated covariance eigenvalues) raised a raw
    RuntimeError: the eigenvalue clustering called .numpy() on a functorch-wrapped tensor."""
    from torch.func import jvp

    from softsym.wrappers import FrameAverage

    class Base(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(12, 1, dtype=torch.float64)

        def forward(self, x):
            return self.lin(x.reshape(x.shape[0], -1))

    torch.manual_seed(0)
    fa = FrameAverage(Base(), group="O(3)", output="scalar")
    t = torch.arange(4, dtype=torch.float64) * math.pi / 2
    x = torch.stack([torch.cos(t), torch.sin(t), torch.zeros(4, dtype=torch.float64)], -1)[None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = fa(x)
        y2, dy = jvp(fa, (x,), (torch.randn_like(x),))
    assert torch.allclose(y, y2, atol=1e-12)
    assert dy.shape == y.shape and torch.isfinite(dy).all()


def test_interrupt_exit_status_names_the_signal():
    """The CLI exited 130 after SIGTERM too; shells report 128 + 15 = 143 for it."""
    from softsym import parallel
    from softsym.cli._common import _interrupt_status

    parallel.STOP_SIGNALS.clear()
    assert _interrupt_status() == 130  # a plain Ctrl-C
    parallel.note_stop_signal(signal.SIGTERM)
    parallel.note_stop_signal(signal.SIGINT)  # the first signal decides
    assert _interrupt_status() == 143
    assert parallel.STOP_SIGNALS == []


def test_run_app_maps_typers_interrupt_exit_to_the_signal():
    import typer

    from softsym import parallel
    from softsym.cli._common import run_app

    app = typer.Typer()

    @app.command()
    def stop():
        parallel.note_stop_signal(signal.SIGTERM)
        raise KeyboardInterrupt("stopped by SIGTERM")

    @app.command()
    def other():
        pass

    with pytest.raises(SystemExit) as exc:
        run_app(app, ["stop"])
    assert exc.value.code == 143
    with pytest.raises(SystemExit) as exc:
        run_app(app, ["other"])
    assert exc.value.code == 0


_NIL = np.zeros((1, 3, 3))
_NIL[0, 0, 1] = 1.0  # one nilpotent generator: not diagonalisable, so only the iterative path applies
_HEIS = np.zeros((3, 4, 4))
_HEIS[0, 0, 1] = _HEIS[1, 1, 2] = _HEIS[2, 0, 2] = 1.0


@pytest.mark.parametrize("alg, atoms", [(_NIL, (0, 0, 0, 0)), (_NIL, (0, 0, 1, 1)), (_HEIS, (0, 1, 0)),
                                        (_NIL, (0,) * 5)])
def test_iterative_path_matches_a_dense_null_space(alg, atoms):
    """The iterative (LOBPCG) path now probes each block with a short run before the long one and keeps the null
    vectors found when the block doubles; its basis must still be the whole null space, to round-off. V**5 has 96
    invariants: the block doubles from 16 to 128."""
    from softsym.reps import solve

    group = ss.Group(lie_algebra=alg)
    q = solve._path_iterative(group, atoms, 1e-6)[0]
    c = solve.dense_constraint(group, atoms)
    sv = np.linalg.svd(c, compute_uv=False)
    null = c.shape[1] - int((sv > 1e-8 * sv.max()).sum())
    assert q.shape == (alg.shape[1] ** len(atoms), null)
    assert solve.block_residual(group, atoms, q) < 1e-12
    assert np.allclose(q.T @ q, np.eye(null), atol=1e-10)


def test_block_counters_tell_solved_from_cached(fresh_cache):
    """`softsym demo` said "solved from scratch" when one cache entry of fourteen was missing; it now counts the
    blocks solved and the blocks read from the cache."""
    from softsym.reps import basis, cache

    rep = ss.rep("V**2", "O(3)")
    s0, c0 = basis.blocks_solved, basis.blocks_cached
    ss.equivariant_basis(rep)
    assert basis.blocks_solved > s0 and basis.blocks_cached == c0
    cache._memory.clear()
    s1 = basis.blocks_solved
    ss.equivariant_basis(rep)  # from disk
    assert basis.blocks_solved == s1 and basis.blocks_cached > c0


def test_nan_in_a_csv_names_its_line(tmp_path):
    """A NaN in a CSV was reported as "row 1, counting from 0" while every other CSV error names the file line."""
    from softsym.errors import DataError

    f = tmp_path / "d.csv"
    f.write_text("x1,x2,x3,y\n1,2,3,4\n\n1,nan,3,4\n")
    with pytest.raises(DataError, match=r"d\.csv, line 4: data row 2 has a NaN / inf entry \(column 2\)"):
        ss.load_task(f, group="O(3)", rep_in="V", rep_out="V0")


def test_prox_softemlp_in_a_plain_loop_warns_once():
    """SoftEMLP(penalty='prox') in a user's own loop (loss + regularization(), no proximal calls) ignored its
    strengths silently: the equivariance error at lambda = 1e6 equalled lambda = 0. It now warns once; the loss
    penalty in the same loop lowers the error as lambda grows."""
    from softsym.nn import SoftEMLP

    def warnings_of(loop_applies_prox: bool):
        m = SoftEMLP("5V0+5V", "V**2", ["O(3)"], ch=16, penalty="prox")
        m.symmetry.set_strengths([100.0])
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            for _ in range(6):
                m.regularization()
                if loop_applies_prox:
                    m.proximal_step(1e-3)
        return [str(w.message) for w in rec]

    assert sum("proximal_step" in w for w in warnings_of(False)) == 1
    assert warnings_of(True) == []


def test_loss_penalty_in_a_plain_loop_lowers_the_error_with_strength():
    """PER's loss penalty in a user's own Adam loop on the Inertia task: the O(3) error falls with lambda."""
    from softsym.nn import SoftEMLP

    task = ss.make_task("inertia", n_train=64, n_val=16, n_test=16, seed=0)
    x, y = task.x_train.float(), task.y_train.float()
    y = y / y.std()
    errs = []
    for lam in (0.0, 1.0, 1e4):
        torch.manual_seed(0)
        m = SoftEMLP("5V0+5V", "V**2", ["O(3)"], ch=16, seed=0)
        m.symmetry.set_strengths([lam])
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        for _ in range(150):
            opt.zero_grad()
            ((m(x) - y).pow(2).mean() + m.regularization()).backward()
            opt.step()
        errs.append(ss.equivariance_error(m.double(), "O(3)", "5V0+5V", "V**2", task.x_test, n_samples=8).mean)
    assert errs[0] > 2 * errs[1] > 10 * errs[2]


# ---------------------------------------------------------------- penalties for any model (up52)
from torch import nn  # noqa: E402

from softsym.errors import ConfigError, ModelError  # noqa: E402
from softsym.soft import (LiePenalty, LinearProjectionPenalty, PERTuner, SampledPenalty, SoftModel,  # noqa: E402
                          SoftSymmetry)


class _InvariantNet(nn.Module):
    """O(3)-invariant by construction (squared norms of the 5 points), dropout in its head."""

    def __init__(self, p=0.0, dtype=torch.float64):
        super().__init__()
        self.head = nn.Sequential(nn.Linear(5, 16, dtype=dtype), nn.Tanh(), nn.Dropout(p), nn.Linear(16, 1, dtype=dtype))

    def forward(self, x):
        return self.head(x.reshape(x.shape[0], 5, 3).pow(2).sum(-1))


def test_per_tuner_keeps_strengths_when_residuals_are_exactly_zero():
    """PER divided 0 by a 1e-300 floor and set every strength to 1e300 on an exactly equivariant model (NaN in
    float32 training)."""
    tuner = PERTuner()
    sym = SoftSymmetry(["O(3)", "O(2)@z", "O(2)@x"], strengths=[0.0, 100.0, 100.0])
    tuner.symmetry, tuner.tracked = sym, [0.0, 0.0, 0.0]
    tuner._adjust()
    assert sym.strengths.tolist() == [0.0, 100.0, 100.0]
    sym.set_strengths([0.0, 100.0, 100.0])
    tuner.adjusted, tuner.tracked = False, [5.0, 0.0, 2.0]
    tuner._adjust()
    assert sym.strengths.tolist() == [0.0, 100.0, 0.0]  # lambda (r_min / R)^2 with r_min = 0
    sym.set_strengths([0.0, 100.0, 100.0])
    tuner.adjusted, tuner.tracked = False, [5.0, 1.0, 2.0]
    tuner._adjust()
    assert sym.strengths.tolist() == pytest.approx([0.0, 100.0, 25.0])


def test_penalty_sums_in_float64():
    sym = SoftSymmetry(["O(3)"], strengths=1e300)
    assert float(sym.penalty(torch.zeros(1, dtype=torch.float32))) == 0.0
    assert sym.penalty(torch.ones(1, dtype=torch.float32)).dtype == torch.float32


def test_per_on_a_soft_model_leaves_the_covering_candidate_unpenalised():
    """A SoftModel has no full group of its own: PER started O(3) at 100 like the subgroups."""
    from softsym.soft.tuning import _full_index

    sym = SoftSymmetry(["O(2)@x", "O(3)", "O(2)@z"])
    model = SoftModel(_InvariantNet(), SampledPenalty(sym, "5V", "V0", seed=0))
    assert _full_index(model, sym) == 1
    pinned = SoftModel(_InvariantNet(), SampledPenalty(SoftSymmetry(["O(2)@x", "O(3)"]), "5V", "V0", seed=0),
                       full_group="O(2)@x")
    assert _full_index(pinned, pinned.symmetry) == 0
    with pytest.raises(ConfigError, match="unknown candidate"):
        SoftModel(_InvariantNet(), SampledPenalty(SoftSymmetry(["O(3)"]), "5V", "V0"), full_group="SO(3)")


def test_sampled_penalty_replays_dropout_and_keeps_batchnorm_statistics():
    """Dropout noise was measured as symmetry breaking (0.66 on an invariant model in train mode), and the extra
    forward passes updated BatchNorm's running statistics."""
    torch.manual_seed(0)
    net = _InvariantNet(p=0.3)
    net.train()
    x = torch.randn(32, 15, dtype=torch.float64)
    pen = SampledPenalty(SoftSymmetry(["O(3)"]), "5V", "V0", n_samples=3, seed=0)
    assert float(pen.residuals(net, x)) < 1e-25
    soft = SoftModel(net, SampledPenalty(SoftSymmetry(["O(3)"]), "5V", "V0", seed=0))
    soft.train()
    soft(x)
    assert float(soft.regularization()) < 1e-25
    bn = nn.Sequential(nn.Linear(15, 8, dtype=torch.float64), nn.BatchNorm1d(8, dtype=torch.float64),
                       nn.Linear(8, 1, dtype=torch.float64))
    bn.train()
    before = [t.clone() for t in (bn[1].running_mean, bn[1].running_var, bn[1].num_batches_tracked)]
    pen.residuals(bn, x)
    after = (bn[1].running_mean, bn[1].running_var, bn[1].num_batches_tracked)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_sampled_penalty_is_reproducible_under_torch_manual_seed():
    """seed=None drew from OS entropy: the README's own soft-model example differed from run to run."""
    x = torch.randn(8, 3, dtype=torch.float64)
    net = nn.Linear(3, 3, dtype=torch.float64)
    vals = []
    for _ in range(2):
        torch.manual_seed(123)
        pen = SampledPenalty(SoftSymmetry(["O(3)"]), rep_in="V", rep_out="V")
        vals.append(float(pen.residuals(net, x)))
    assert vals[0] == vals[1]


def test_lie_penalty_auto_falls_back_to_reverse_mode():
    """LiePenalty offered jvp only: a BatchNorm model in training mode failed (jvp cannot mutate its buffers)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8, dtype=torch.float64), nn.BatchNorm1d(8, dtype=torch.float64),
                        nn.Tanh(), nn.Linear(8, 3, dtype=torch.float64))
    net.train()
    x = torch.randn(16, 3, dtype=torch.float64)
    auto = LiePenalty(["O(3)"], rep_in="V", rep_out="V")
    r = auto.residuals(net, x)
    assert auto.method == "auto" and True in auto._jvp_failed and float(r) > 0
    with pytest.raises(ModelError, match="method='auto'"):
        LiePenalty(["O(3)"], "V", "V", method="jvp").residuals(net, x)
    net.eval()  # jvp works in eval mode, and agrees with reverse mode there
    a = LiePenalty(["O(3)"], "V", "V", method="jvp", seed=0).residuals(net, x)
    b = LiePenalty(["O(3)"], "V", "V", method="vjp", seed=0).residuals(net, x)
    assert torch.allclose(a, b, rtol=1e-9)


def test_penalty_argument_spellings():
    sym = SoftSymmetry(["O(3)", "O(2)@z"], strengths=[1.0, 9.0])
    assert SampledPenalty(["O(3)", "O(2)@z"], "V", "V").symmetry.names == ["O(3)", "O(2)@z"]
    with pytest.raises(ConfigError, match="both rep_ins= and rep_in="):
        SampledPenalty(sym, "V", "V", rep_in="V")
    with pytest.raises(ConfigError, match="needs the model's rep_in"):
        LiePenalty(sym)
    net = nn.Sequential(nn.Linear(3, 3))
    assert len(LinearProjectionPenalty(net, sym, reps={"0": ("V", "V")}).layers) == 1
    assert sym["O(3)"] == 1.0 and sym["o(2)@z"] == 9.0 and sym.strength(1) == 9.0
    sym.set_strengths({"O(3)": 2.0})
    assert sym.as_dict() == {"O(3)": 2.0, "O(2)@z": 9.0}
    with pytest.raises(ConfigError, match="unknown candidate"):
        sym["SO(3)"]


def test_linear_projection_penalty_shared_layer_and_complex_groups():
    lin = nn.Linear(3, 3)
    net = nn.Sequential(lin, nn.Tanh(), lin)
    pen = LinearProjectionPenalty(net, SoftSymmetry("O(3)"), {"0": ("V", "V"), "2": ("V", "V")})
    assert [n for n, *_ in pen.layers] == ["0", "2"]
    with pytest.raises(ConfigError, match="complex"):
        LinearProjectionPenalty(nn.Sequential(nn.Linear(2, 2)), SoftSymmetry("SU(2)"), {"0": ("V", "V")})


def test_soft_symmetry_state_dict_keeps_names_and_validates():
    """load_state_dict accepted negative / NaN strengths and loaded strengths into candidates of another order."""
    src = SoftSymmetry(["O(3)", "O(2)@z"], strengths=[1.0, 9.0])
    dst = SoftSymmetry(["O(2)@z", "O(3)"])
    dst.load_state_dict(src.state_dict())
    assert dst.as_dict() == {"O(2)@z": 9.0, "O(3)": 1.0}
    with pytest.raises(ConfigError, match="finite and non-negative"):
        SoftSymmetry(["O(3)", "O(2)@z"]).load_state_dict({"strengths": torch.tensor([-5.0, float("nan")])})
    with pytest.raises(ConfigError, match="3,\\) strengths"):
        SoftSymmetry(["O(3)", "O(2)@z"]).load_state_dict({"strengths": torch.ones(3, dtype=torch.float64)})
    with pytest.raises(ConfigError, match="same candidates"):
        SoftSymmetry(["O(3)", "SO(3)"]).load_state_dict(src.state_dict())
    old = SoftSymmetry(["O(3)", "O(2)@z"])
    old.load_state_dict({"strengths": torch.tensor([3.0, 4.0], dtype=torch.float64)})  # saved before names were
    assert old.as_dict() == {"O(3)": 3.0, "O(2)@z": 4.0}


def test_soft_model_names_a_rep_size_mismatch():
    soft = SoftModel(nn.Linear(15, 3), SampledPenalty(SoftSymmetry("O(3)"), "5V", "V"))
    soft.train()
    with pytest.raises(ConfigError, match="6 features but the penalty was declared on rep_in"):
        soft(torch.randn(4, 6))


def test_targets_on_a_tiny_scale_still_train():
    """Targets ~1e-8 (SI units) stalled at the constant predictor: their gradients were below Adam's eps."""
    from softsym import TrainConfig, Trainer, build_model, task_from_arrays

    r = np.random.default_rng(0)
    x = r.standard_normal((300, 3))
    y = (x ** 2).sum(1, keepdims=True) * 1e-8
    out = []
    for scale in (1e-8, 1.0):
        task = task_from_arrays(x, y / 1e-8 * scale, group="O(3)", rep_in="V", rep_out="V0", seed=0)
        torch.manual_seed(0)
        model = build_model("mlp", task, ch=32)
        res = Trainer(model, task, TrainConfig(epochs=40, batch_size=100, progress=False)).fit()
        out.append(res.metrics["test_mse"] / scale ** 2)
    assert out[0] == pytest.approx(out[1], rel=1e-3)
    assert out[1] < 0.5 * float(task.y_test.var())


# ---------------------------------------------------------------- symmetry report on unseen data (up51)
def _o3_task(n=300, y=None):
    from softsym import task_from_arrays

    r = np.random.default_rng(0)
    x = r.standard_normal((n, 6))
    y = (x[:, :3] ** 2).sum(1, keepdims=True) if y is None else y
    return task_from_arrays(x, y, "O(3)", "2V", "V0", candidates=["O(3)", "O(2)@z"])  # positional reps too


def test_report_refuses_nan_and_misshaped_probes():
    """A probe returning NaN, or (n,) against (n, 1) targets, made every candidate "hold"."""
    from softsym.report import exact_model_comparison, symmetry_report

    class NanNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 1)

        def forward(self, x):
            return self.lin(x) * float("nan")

    class Flat(NanNet):
        def forward(self, x):
            return self.lin(x)[:, 0]

    task = _o3_task()
    with pytest.raises(ModelError, match="NaN / inf outputs"):
        symmetry_report(NanNet(), task)
    with pytest.raises(ModelError, match=r"returned \(45,\) for 45 inputs.*\(45, 1\)"):
        symmetry_report(Flat(), task)
    with pytest.raises(ModelError, match="NaN / inf outputs"):
        exact_model_comparison(nn.Linear(6, 1), {"O(3)": NanNet()}, task)
    with pytest.raises(ConfigError, match="needs a model"):
        symmetry_report("model", task)


def test_report_accepts_a_callable_and_flags_unlearned_and_constant_targets():
    from softsym.report import symmetry_report

    task = _o3_task()
    rows = symmetry_report(lambda x: (x[:, :3] ** 2).sum(1, keepdim=True), task, skeletons=True)["candidates"]
    assert [r["group"] for r in rows] == ["O(3)", "O(2)@z", "Skeleton(O(3))", "Skeleton(O(2)@z)"]
    assert all(r["verdict"] == "untestable" for r in rows)  # an exactly invariant probe
    torch.manual_seed(0)
    rows = symmetry_report(nn.Linear(6, 1).double(), task)["candidates"]  # an untrained probe
    assert all(r["verdict"] == "uncertain" and "has not learned" in r["reason"] for r in rows)
    rows = symmetry_report(nn.Linear(6, 1).double(), _o3_task(y=np.zeros((300, 1))))["candidates"]
    assert all(r["verdict"] == "holds" and "trivially" in r["reason"] for r in rows)


def test_split_message_and_embedded_group_names():
    from softsym import task_from_arrays
    from softsym.errors import DataError

    with pytest.raises(DataError, match="validation 150 \\+ test 2000 = 2150 leave no training samples"):
        task_from_arrays(np.zeros((1000, 3)), np.zeros((1000, 1)), "O(3)", "V", "V0", n_test=2000)
    g = ss.group("O(3)@[1,2,3]:4")
    assert g.name == "O(3)@[1,2,3]:4" and ss.group(g.name).key == g.key


# ---------------------------------------------------------------- cache under stress (up54)
def test_unwritable_cache_warns_once_and_stops_trying(fresh_cache, monkeypatch):
    """A read-only cache warned once per block (the message held the random temporary's name)."""
    import errno
    import tempfile

    calls = []

    def refuse(*args, **kwargs):
        calls.append(1)
        raise PermissionError(errno.EACCES, "Permission denied", str(fresh_cache / ".tmp-x1y2.ssb"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for spec in ("V", "V**2", "V**3"):
            ss.equivariant_basis(ss.rep(spec, "O(3)"))
    msgs = [str(w.message) for w in rec if "cannot write" in str(w.message)]
    assert len(msgs) == 1 and ".tmp-" not in msgs[0] and len(calls) == 1


def test_cache_entries_are_readable_by_others_and_clear_spares_live_files(fresh_cache):
    import os
    import stat
    import time

    from softsym.reps import cache

    ss.equivariant_basis(ss.rep("V**2", "O(3)"))
    entries = [f for f in fresh_cache.iterdir() if f.suffix == ".ssb"]
    assert entries
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(entries[0].stat().st_mode) == 0o666 & ~umask
    live_tmp, live_lock = fresh_cache / ".tmp-live.ssb", fresh_cache / ".abc.lock"
    old_tmp = fresh_cache / ".tmp-old.ssb"
    for f in (live_tmp, live_lock, old_tmp):
        f.write_bytes(b"x")
    past = time.time() - 2 * cache._STALE_SECONDS
    os.utime(old_tmp, (past, past))
    assert cache.clear() == len(entries)
    assert live_tmp.exists() and live_lock.exists() and not old_tmp.exists()


# ---------------------------------------------------------------- README / API pass (up53) and small API fixes
def test_group_sample_and_group_average_follow_torch_manual_seed():
    g = ss.group("SO(3)")
    torch.manual_seed(7)
    a = g.sample(3)
    torch.manual_seed(7)
    b = g.sample(3)
    assert torch.equal(a, b)
    from softsym.wrappers import GroupAverage

    x = torch.randn(4, 3, dtype=torch.float64)
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        avg = GroupAverage(nn.Linear(3, 3, dtype=torch.float64), "SO(3)", "V", "V", n_samples=4)
        outs.append(avg(x))
    assert torch.equal(outs[0], outs[1])


def test_small_api_spellings():
    from softsym import defaults
    from softsym.errors import SolverError
    from softsym.metrics import lie_derivative
    from softsym.wrappers import group_average

    assert ss.Embed("O(2)", [0, 2], 3).key == ss.group("O(2)@[0,2]:3").key
    with pytest.raises(SolverError, match="cache must be True or False"):
        ss.equivariant_basis(ss.rep("V", "O(3)"), cache="no")
    assert group_average.DEFAULT_MC_SAMPLES == defaults.DEFAULT_MC_SAMPLES == 16
    f = lambda x: x * x.pow(2).sum(1, keepdim=True) + x[:, :1]  # noqa: E731  (breaks SO(3))
    a = ss.group("SO(3)").lie_algebra[0]
    x = torch.randn(5, 3, dtype=torch.float64)
    assert torch.equal(lie_derivative(f, "SO(3)", "V", "V", a, x), lie_derivative(f, "V", "V", a, x, group="SO(3)"))


def test_cache_clear_declined_exits_zero(fresh_cache):
    from typer.testing import CliRunner

    from softsym.cli import app

    ss.equivariant_basis(ss.rep("V**2", "O(3)"))
    res = CliRunner().invoke(app, ["cache", "clear"], input="n\n")
    assert res.exit_code == 0 and "nothing removed" in res.output
    assert any(f.suffix == ".ssb" for f in fresh_cache.iterdir())


# ---------------------------------------------------------------- metrics and wrappers on unusual groups (up58)
def test_metrics_on_huge_symmetric_groups_and_infinite_compact_generators():
    """S(171): float(171!) overflowed in the sampler description; a rotation by 1 rad (a compact group of infinite
    order given by a discrete generator) was refused by the metrics and GroupAverage."""
    from softsym.wrappers import GroupAverage

    assert "1.24e+309 elements" in ss.group("S(171)").describe_sampler()
    r = ss.equivariance_error(lambda z: z.sum(1, keepdim=True), "S(171)", "V", "V0",
                              torch.randn(8, 171, dtype=torch.float64), n_samples=4)
    assert r.max < 1e-12
    a = 1.0
    rot = ss.Group(discrete_generators=np.array([[[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]]))
    r = ss.equivariance_error(lambda z: z.norm(dim=1, keepdim=True), rot, "V", "V0",
                              torch.randn(4, 2, dtype=torch.float64))
    assert r.max < 1e-12
    ga = GroupAverage(nn.Linear(2, 1, dtype=torch.float64), rot, "V", "V0", n_samples=8, seed=0)
    assert ga(torch.randn(3, 2, dtype=torch.float64)).shape == (3, 1)


def test_act_each_caps_the_stacked_elements(monkeypatch):
    """Below 256 rows act_each stacked S*B dense (d, d) matrices: 4.6 GB for Z(300) at batch 200."""
    from softsym import metrics

    g = ss.group("Z(40)")
    els = g.sample(8, seed=0)
    x = torch.randn(100, 40, dtype=torch.float64)
    rep = ss.rep("V", g)
    full = metrics.act_each(rep, els, x)
    monkeypatch.setattr(metrics, "_BATCHED_BYTES", 1)
    looped = metrics.act_each(rep, els, x)
    assert torch.equal(full, looped)


# ---------------------------------------------------------------- models and training (up56)
def test_per_warns_when_it_adjusts_after_too_few_steps():
    tuner = PERTuner()
    model = ss.nn.SoftEMLP("V", "V", ["O(3)", "O(2)@z"], ch=8)
    with pytest.warns(UserWarning, match="after 25 optimiser steps"):
        tuner.attach(model, epochs=100, steps_per_epoch=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PERTuner().attach(ss.nn.SoftEMLP("V", "V", ["O(3)", "O(2)@z"], ch=8), epochs=100, steps_per_epoch=10)


def test_extending_a_run_names_stop_after(tmp_path):
    from softsym import TrainConfig, Trainer, build_model, make_task

    task = make_task("inertia", n_train=20, n_val=10, n_test=10, seed=0)
    run = tmp_path / "run"
    torch.manual_seed(0)
    Trainer(build_model("mlp", task, ch=8), task, TrainConfig(epochs=2, batch_size=10, progress=False,
                                                              run_dir=str(run))).fit()
    with pytest.raises(ConfigError, match="stop_after"):
        Trainer(build_model("mlp", task, ch=8), task, TrainConfig(epochs=4, batch_size=10, progress=False,
                                                                  run_dir=str(run), resume=True)).fit()


# ---------------------------------------------------------------- CLI end to end (up57)
def test_report_json_says_where_an_interrupt_stopped(tmp_path, monkeypatch):
    """An interrupted `softsym report --json` printed nothing on stdout (fit --json prints a summary)."""
    import json as _json

    from typer.testing import CliRunner

    from softsym.cli import app
    from softsym.cli import train as cli_train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("interrupted after epoch 3")

    monkeypatch.setattr(cli_train, "_run_one", interrupted)
    res = CliRunner().invoke(app, ["report", "--task", "mixed-inertia:o2y", "--epochs", "10", "--out",
                                   str(tmp_path / "rep"), "--json", "--no-progress", "--no-exact"])
    start = res.output.index("{")
    out = _json.loads(res.output[start:res.output.index("}", start) + 1])
    assert out["interrupted"] is True and out["run_dir"].endswith("probe-mlp-seed0")


def test_trainer_messages_follow_the_cli_wording(tmp_path):
    from softsym import TrainConfig, Trainer, build_model, make_task
    from softsym.train import message_wording

    task = make_task("inertia", n_train=20, n_val=10, n_test=10, seed=0)
    run = tmp_path / "run"
    Trainer(build_model("mlp", task, ch=8), task, TrainConfig(epochs=1, batch_size=10, progress=False,
                                                              run_dir=str(run))).fit()
    with message_wording(resume="--resume", overwrite="--overwrite", run_dir="--run-dir"):
        with pytest.raises(ConfigError) as exc:
            Trainer(build_model("mlp", task, ch=8), task, TrainConfig(epochs=1, batch_size=10, progress=False,
                                                                      run_dir=str(run))).fit()
    assert "pass --resume to continue" in str(exc.value) and "resume=True" not in str(exc.value)
    with pytest.raises(ConfigError, match="resume=True"):  # outside the block: the Python wording again
        Trainer(build_model("mlp", task, ch=8), task, TrainConfig(epochs=1, batch_size=10, progress=False,
                                                                  run_dir=str(run))).fit()


# ---------------------------------------------------------------- solver: small finite groups on large spaces (up54)
@pytest.mark.parametrize("copies", [12, 30])
def test_group_average_path_for_small_finite_groups(copies):
    """D(5) as many copies of its 2-d rep: Hom(V, V) has copies^2 invariants. The eigenvalue-1 path took 66 s at
    d = 60 and at d = 100 everything fell through to a refusal; the exact group average is seconds."""
    from softsym.reps import solve

    c, s = np.cos(2 * np.pi / 5), np.sin(2 * np.pi / 5)
    rot, flip = np.array([[c, -s], [s, c]]), np.array([[1.0, 0.0], [0.0, -1.0]])
    gens = np.stack([np.kron(np.eye(copies), rot), np.kron(np.eye(copies), flip)])
    group = ss.FiniteGroup(torch.tensor(gens))
    basis = ss.equivariant_basis(ss.rep("Hom(V,V)", group), cache=False)
    assert basis.dim == copies ** 2
    assert {b["path"] for b in basis.blocks} == {"average"}
    q = basis.Q.numpy()
    assert solve.block_residual(group, (0, 1), q) < 1e-10
    assert np.allclose(q.T @ q, np.eye(copies ** 2), atol=1e-10)


def test_group_average_path_matches_the_dense_null_space():
    from softsym.reps import solve

    group = ss.group("D(6)@z")
    for atoms in [(0, 0, 0, 0, 0), (0, 1, 0, 1, 0)]:
        out = solve._path_average(group, atoms, 1e-6)
        c = solve.dense_constraint(group, atoms)
        sv = np.linalg.svd(c, compute_uv=False)
        null = c.shape[1] - int((sv > 1e-8 * sv.max()).sum())
        assert out[0].shape == (3 ** 5, null) and solve.block_residual(group, atoms, out[0]) < 1e-12
    assert isinstance(solve._path_average(ss.group("SO(3)"), (0, 0), 1e-6), type(None))


# ---------------------------------------------------------------- regression pass (up59)
def test_penalties_on_batchnorm_models_backpropagate_and_leave_no_trace():
    """Restoring BatchNorm's running statistics in place bumped their version: backward() failed."""
    torch.manual_seed(0)
    bn = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).double().train()
    x = torch.randn(16, 3, dtype=torch.float64)
    SampledPenalty("O(3)", "V", "V", seed=0)(bn, x).backward()
    before = int(bn[1].num_batches_tracked)
    LiePenalty("O(3)", "V", "V", seed=0)(bn, x).backward()
    assert int(bn[1].num_batches_tracked) == before


def test_refused_strength_loads_leave_the_module_unchanged():
    sym = SoftSymmetry(["O(3)", "O(2)@z", "O(2)@x"], strengths=[1.0, 2.0, 3.0])
    bad = sym.state_dict()
    bad["strengths"] = torch.tensor([1.0, float("nan"), 1.0], dtype=torch.float64)
    with pytest.raises(ConfigError):
        sym.load_state_dict(bad)
    other = SoftSymmetry(["O(2)@x", "O(3)", "O(2)@y"])
    with pytest.raises(ConfigError, match="same candidates"):
        other.load_state_dict(sym.state_dict())
    assert sym.as_dict() == {"O(3)": 1.0, "O(2)@z": 2.0, "O(2)@x": 3.0}
    assert other.as_dict() == {"O(2)@x": 1.0, "O(3)": 1.0, "O(2)@y": 1.0}
    spelled = SoftSymmetry(["O(3)", "O(2)@[0,1]:3"], strengths=[1.0, 5.0])
    target = SoftSymmetry(["O(2)@z", "O(3)"])
    target.load_state_dict(spelled.state_dict())  # the same candidates under other spellings
    assert target.as_dict() == {"O(2)@z": 5.0, "O(3)": 1.0}


def test_report_notes_constant_targets_up_to_round_off():
    from softsym.report import symmetry_report

    rows = symmetry_report(nn.Linear(6, 1).double(), _o3_task(y=np.full((300, 1), 3.3)))["candidates"]
    assert all("trivially" in r["reason"] for r in rows)


def test_raw_model_on_tiny_targets_warns():
    from softsym import TrainConfig, Trainer, task_from_arrays

    r = np.random.default_rng(0)
    x = r.standard_normal((60, 3))
    task = task_from_arrays(x, (x ** 2).sum(1, keepdims=True) * 1e-8, "O(3)", "V", "V0", seed=0)
    with pytest.warns(UserWarning, match="normalise the targets"):
        Trainer(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double(), task,
                TrainConfig(epochs=1, batch_size=30, progress=False)).fit()


def test_wrappers_name_a_failing_model():
    """GroupAverage / FrameAverage / SortCanonicalize passed the model's raw RuntimeError through."""
    from softsym.wrappers import FrameAverage, GroupAverage

    ga = GroupAverage(nn.Linear(4, 1, dtype=torch.float64), "S(3)", "V", "V0")
    with pytest.raises(ModelError, match="GroupAverage: calling the model on inputs of shape"):
        ga(torch.randn(2, 3, dtype=torch.float64))
    fa = FrameAverage(nn.Linear(7, 1, dtype=torch.float64), "O(3)")
    with pytest.raises(ModelError, match="FrameAverage: calling the model"):
        fa(torch.randn(2, 5, 3, dtype=torch.float64))
