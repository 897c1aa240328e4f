"""Strength tuners: PER's rule exactly, the soft tuner's hypergradient, and both on a tiny MixedInertia run."""
import math

import pytest
import torch
from torch import nn

from softsym.errors import ConfigError
from softsym.soft import SoftSymmetry
from softsym.soft.tuning import PERTuner, SoftTuner, TunerContext, make_tuner


class _FakeSoft(nn.Module):
    """R_j = 1/2 ||theta - a_j||^2 for fixed anchors a_j: controllable residuals with the soft-model interface."""

    def __init__(self, anchors, full_group="O(3)"):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(anchors.shape[1], dtype=torch.float64))
        self.register_buffer("anchors", anchors.double())
        self.symmetry = SoftSymmetry(["O(3)", "O(2)@x", "O(2)@y", "O(2)@z"][: anchors.shape[0]])
        self.full_group = full_group

    def residuals(self):
        return 0.5 * ((self.theta[None] - self.anchors) ** 2).sum(1)

    def forward(self, x):
        return x @ self.theta[:, None].expand(-1, 1).to(x.dtype) if x.shape[1] == self.theta.numel() else x


def test_per_rule_matches_the_paper_code():
    anchors = torch.tensor([[1.0, 0], [2.0, 0], [0.5, 0], [4.0, 0]])
    model = _FakeSoft(anchors)
    tuner = PERTuner(lambda_init=100.0, power=2.0, adjust_at=20, window=10, warmup=3)
    tuner.attach(model, epochs=80, steps_per_epoch=2)
    assert model.symmetry.strengths.tolist() == [0.0, 100.0, 100.0, 100.0]  # full group starts (and stays) at 0
    assert tuner.select_after_epoch == 40
    for epoch in range(80):
        tuner.end_epoch(epoch)
    r = model.residuals().detach()
    lam = model.symmetry.strengths
    r_min = min(r[1:])  # the minimum runs over candidates with lambda != 0
    for j in range(1, 4):
        assert math.isclose(float(lam[j]), 100.0 * float(r_min / r[j]) ** 2, rel_tol=1e-12)
    assert float(lam[0]) == 0.0
    assert tuner.calls == 10  # epochs 11..20 tracked (the window), the first 3 calls skipped
    events = [h.get("event") for h in model.symmetry.history]
    assert events[0] == "init" and events.count("adjust") == 1
    adj = next(h for h in model.symmetry.history if h.get("event") == "adjust")
    assert adj["epoch"] == 20 and adj["strengths"] == [float(x) for x in lam]


def test_per_tracks_the_whole_vector_when_any_residual_improves():
    model = _FakeSoft(torch.tensor([[1.0], [2.0], [3.0]]))
    tuner = PERTuner(adjust_at=5, window=5, warmup=0)
    tuner.attach(model, epochs=20, steps_per_epoch=1)
    with torch.no_grad():
        model.theta.fill_(0.0)
    tuner.end_epoch(0)
    first = list(tuner.tracked)
    with torch.no_grad():
        model.theta.fill_(2.0)  # R = [0.5, 0, 0.5]: R_1 improves, R_0 too; R_2 gets worse
    tuner.end_epoch(1)
    assert tuner.tracked == [0.5, 0.0, 0.5] != first


def test_per_state_roundtrip():
    model = _FakeSoft(torch.tensor([[1.0], [2.0], [3.0]]))
    t1 = PERTuner(adjust_at=4, window=4, warmup=1)
    t1.attach(model, epochs=10, steps_per_epoch=1)
    for e in range(3):
        t1.end_epoch(e)
    state = t1.state_dict()
    t2 = PERTuner(adjust_at=4, window=4, warmup=1)
    t2.attach(model, epochs=10, steps_per_epoch=1)
    t2.load_state_dict(state)
    assert (t2.tracked, t2.calls, t2.adjusted) == (t1.tracked, t1.calls, t1.adjusted)
    with pytest.raises(ConfigError):
        SoftTuner().load_state_dict(state)


class _ZModel(nn.Module):
    """f(x) = x + 0.5 x_z e_z: exactly O(2)@z-equivariant, not O(3)-equivariant (a perfect model of its data)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3, dtype=torch.float64))
        self.symmetry = SoftSymmetry(["O(3)", "O(2)@z"])
        self.full_group, self.rep_in, self.rep_out = "O(3)", "V", "V"

    def residuals(self):
        return torch.stack([(self.w ** 2).sum(), 0.5 * (self.w ** 2).sum()])

    def forward(self, x):
        return x + 0.5 * x[:, 2:3] * torch.tensor([0.0, 0.0, 1.0], dtype=x.dtype)


def test_soft_tuner_symmetry_test_and_update_rule():
    """The validation statistic is exactly 0 for a true symmetry and large for a broken one; the strengths move
    accordingly (true up, broken down), after the warm-up only."""
    model = _ZModel()
    x = torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = model(x)
    tuner = SoftTuner(init=1.0, every=1, lr=0.1, warmup=0.1, group_samples=2)
    tuner.attach(model, epochs=1, steps_per_epoch=30)
    assert tuner.normalised() == [1.0, 1.0] and tuner.warmup_steps == 3
    ctx = TunerContext(model=model, optimizer=None, step=1, epoch=0, lr=0.1, loss_fn=None,
                       val_batch=lambda: (x, y), val_all=(x, y))
    t, gap = tuner.test_statistics(ctx)
    assert t[1] == 0.0 and gap[1] == 0.0  # O(2)@z: (g x, g y) has exactly the same loss
    assert t[0] > 5 and gap[0] > 0  # O(3) is rejected (t > reject = 3)
    for step in range(1, 31):
        ctx.step = step
        tuner.after_step(ctx)
    lt = tuner.normalised()
    assert tuner.t == 27  # steps 4..30
    assert math.isclose(lt[1], math.exp(0.1 * 27), rel_tol=1e-9)  # not rejected: + lr per hyper-step
    assert lt[0] < math.exp(-0.1 * 10)  # rejected: down by up to lr per hyper-step
    s = model.symmetry.strengths
    assert math.isclose(float(s[1] / s[0]), lt[1] / lt[0], rel_tol=1e-9)
    assert tuner.overhead_seconds > 0 and model.symmetry.history[-1]["evidence"][1] == 0.0
    state = tuner.state_dict()
    other = SoftTuner(init=1.0, every=1, lr=0.1, warmup=0.1, group_samples=2)
    other.attach(_ZModel(), epochs=1, steps_per_epoch=30)
    other.load_state_dict(state)
    assert other.normalised() == lt and other.t == 27


def test_soft_tuner_default_schedule_decides_early():
    """Default schedule: no hyper-step in the 5% warm-up, ~250 dense ones in the next 20%, then one every 4 * every
    steps; the default lr takes a true symmetry from init to hi within the first quarter of the window."""
    default = SoftTuner()
    default.attach(_ZModel(), epochs=8000, steps_per_epoch=2)
    assert default.restart and default.restart_epoch == 2000  # (800 + 3200) / 2: strengths frozen afterwards
    assert max(s for s in range(1, 16001) if default._is_hyperstep(s)) <= 4000
    tuner = SoftTuner(restart=False)  # the monitoring schedule after the window
    tuner.attach(_ZModel(), epochs=8000, steps_per_epoch=2)  # PER's MixedInertia protocol: 16000 steps
    assert tuner.warmup_steps == 800 and tuner.window_steps == 3200 and tuner.every == 13
    steps = [s for s in range(1, 16001) if tuner._is_hyperstep(s)]
    assert steps[0] == 813 and all(s > 800 for s in steps)
    dense = [s for s in steps if s <= 800 + 3200]
    assert 240 <= len(dense) <= 250 and dense[1] - dense[0] == 13
    sparse = [s for s in steps if s > 4000]
    assert sparse and all(b - a == 52 for a, b in zip(sparse, sparse[1:]))
    expected_steps_to_hi = math.log(tuner.hi / tuner.init) / (0.68 * tuner.lr)
    assert expected_steps_to_hi <= 0.26 * len(dense)
    with pytest.raises(ConfigError, match="window"):
        SoftTuner(warmup=0.5, window=0.6)


def test_soft_tuner_options_validated():
    with pytest.raises(ConfigError):
        SoftTuner(init=0.0)
    with pytest.raises(ConfigError):
        SoftTuner(init=10.0, hi=5.0)
    with pytest.raises(ConfigError, match="unknown strength tuner"):
        make_tuner("bayes")
    with pytest.raises(ConfigError, match="bad option"):
        make_tuner("per", lambda_init=1.0, nonsense=2)
    assert make_tuner("none") is None and isinstance(make_tuner("soft", every=3), SoftTuner)
    with pytest.raises(ConfigError):
        SoftTuner(warmup=1.0)
    with pytest.raises(ConfigError):
        SoftTuner(accept=3.0, reject=1.0)
    with pytest.raises(ConfigError, match="soft model"):
        PERTuner().attach(nn.Linear(2, 2), epochs=1, steps_per_epoch=1)


# ---------------------------------------------------------------------------- tiny MixedInertia runs
def _tiny_trainer(tuner_name, tuner_options, epochs, variant="o2z", tuner=None):
    from softsym.data import make_task
    from softsym.models import build_model
    from softsym.train import TrainConfig, Trainer

    task = make_task(f"mixed-inertia:{variant}", n_train=TINY["n_train"], n_val=TINY["n_val"], n_test=50, seed=0)
    model = build_model(tuner_name, task, ch=TINY["ch"], num_layers=TINY["layers"], seed=0)
    cfg = TrainConfig(lr=TINY["lr"], epochs=epochs, batch_size=TINY["batch"], seed=0, progress=False,
                      tuner_options=tuner_options, equivariance_samples=2, equivariance_points=16)
    return Trainer(model, task, cfg, tuner=tuner)


def _tiny_run(tuner_name, tuner_options, epochs, variant="o2z"):
    return _tiny_trainer(tuner_name, tuner_options, epochs, variant).fit()


#: A few seconds per run: 480 Adam steps of a one-layer SoftEMLP on 120 samples.
TINY = {"n_train": 120, "n_val": 120, "ch": 16, "layers": 1, "lr": 1e-2, "batch": 10}


@pytest.mark.parametrize("axis", ["z", "x"])
def test_per_tuner_puts_the_true_group_first_on_mixed_inertia_o2(axis):
    res = _tiny_run("per", {}, epochs=40, variant=f"o2{axis}")
    s = res.metrics["strengths"]
    true = f"O(2)@{axis}"
    assert s["O(3)"] == 0.0  # PER never turns the full group on
    assert s[true] == max(s.values()) == 100.0  # the smallest residual keeps lambda_init
    assert all(v < 100.0 for k, v in s.items() if k != true), s
    assert any(h.get("event") == "adjust" for h in res.history)


PER_CANDIDATES = ("O(3)", "O(2)@x", "O(2)@y", "O(2)@z")
SKELETONS = ("Skeleton(O(3))", "Skeleton(O(2)@x)", "Skeleton(O(2)@y)", "Skeleton(O(2)@z)")


def test_soft_tuner_picks_the_surviving_axis_on_mixed_inertia_o2y():
    s = _tiny_run("soft", {}, epochs=40, variant="o2y").metrics["strengths"]
    assert tuple(s) == PER_CANDIDATES + SKELETONS  # soft adds every candidate's finite skeleton
    cont = {k: s[k] for k in PER_CANDIDATES}
    assert max(cont, key=cont.get) == "O(2)@y", s
    assert all(v < 1e-3 * s["O(2)@y"] for k, v in cont.items() if k != "O(2)@y"), s
    # y = I diag(1, 0, 1) commutes with every axis flip: all four skeletons (subgroups of Signs(3)) are symmetries
    assert all(s[k] > 1e3 * max(v for c, v in cont.items() if c != "O(2)@y") for k in SKELETONS), s


def test_soft_tuner_finds_the_axis_flips_when_every_continuous_candidate_breaks():
    """MixedInertia 'none' keeps no O(2) but every axis flip: the skeletons are strong, PER's four weak."""
    res = _tiny_run("soft", {}, epochs=40, variant="none")
    norm = dict(zip(res.metrics["strengths"], res.history[-1]["normalised"]))
    assert all(norm[k] <= 1e-2 for k in PER_CANDIDATES), norm  # every strength starts at 1 and fell
    assert all(norm[k] >= 100.0 for k in SKELETONS), norm  # ... or grew


def test_soft_tuner_moves_strengths_towards_the_true_group_on_mixed_inertia_o2z():
    res = _tiny_run("soft", {}, epochs=40)
    s = res.metrics["strengths"]
    assert max(s, key=s.get) == "O(2)@z", s
    assert min(s, key=s.get) == "O(3)", s
    hist = res.history
    assert len(hist) >= 5 and all(len(h["strengths"]) == 8 and len(h["residuals"]) == 8 for h in hist)
    assert 0 < res.metrics["tuner_overhead_fraction"] < 1


def test_soft_tuner_keeps_every_candidate_strong_on_mixed_inertia_o3():
    res = _tiny_run("soft", {}, epochs=40, variant="o3")
    final = res.history[-1]["normalised"]
    assert min(final) >= 100.0, final  # all four candidates are symmetries: every strength grows from 1
    assert res.history[-1]["event"] == "final"


def test_soft_tuner_restart_schedule():
    t = SoftTuner(restart=True)
    t.epochs, t.steps_per_epoch = 100, 2
    # warm-up 5 % + window 20 % of 200 steps = step 50 = epoch 25; selection only from the second stage
    assert t.restart_epoch == 25 and t.select_after_epoch == 25
    assert t._is_hyperstep(t.warmup_steps + t.every) and not t._is_hyperstep(51 + t.every)
    off = SoftTuner(restart=False)
    off.epochs, off.steps_per_epoch = 100, 2
    assert off.restart_epoch is None and off.select_after_epoch == 0
    assert t.config()["restart"] is True


def test_soft_tuner_restart_retrains_from_the_initial_parameters_with_frozen_strengths():
    seen = {}

    class Spy(SoftTuner):
        def end_epoch(self, epoch):
            super().end_epoch(epoch)
            if epoch + 1 == self.restart_epoch:
                seen["strengths"] = self.symmetry.strengths.clone()

    trainer = _tiny_trainer("soft", {}, 40, tuner=Spy(restart=True))
    model = trainer.model
    init = {k: p.detach().clone() for k, p in model.named_parameters()}
    res = trainer.fit()
    restart = [h for h in res.history if h.get("event") == "restart"]
    assert len(restart) == 1 and restart[0]["step"] == 10 * 12  # epoch 10 of 40, 12 steps per epoch
    assert torch.equal(model.symmetry.strengths, seen["strengths"])  # frozen after the decision window
    s = res.metrics["strengths"]
    assert max(s, key=s.get) == "O(2)@z", s
    assert res.metrics["best_epoch"] > 10  # selected from the second stage
    # the trainer kept the initial parameters for the restart (they also go into the checkpoint)
    for k, p in trainer._initial_params.items():
        assert torch.equal(p, init[k]), k


def test_soft_tuner_restart_resumes_exactly(tmp_path):
    from softsym.data import make_task
    from softsym.models import build_model
    from softsym.train import TrainConfig, Trainer

    task = make_task("mixed-inertia:o2z", n_train=40, n_val=20, n_test=20, seed=0)

    def run(run_dir, **kw):
        model = build_model("soft", task, ch=8, num_layers=1, seed=1)
        cfg = TrainConfig(lr=3e-3, epochs=8, batch_size=16, seed=0, progress=False, equivariance_samples=2,
                          equivariance_points=8, run_dir=str(run_dir), tuner_options={"restart": True, "every": 1},
                          **kw)
        return Trainer(model, task, cfg).fit()

    full = run(tmp_path / "full")
    # restart after epoch ceil((0.05 + 0.2) * 24 / 3) = 2; interrupt before it and after it
    for stop in (1, 5):
        d = tmp_path / f"split{stop}"
        assert not run(d, stop_after=stop).finished
        resumed = run(d, resume=True)
        for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
            assert torch.equal(a, b), (stop, k)
        assert full.metrics["test_mse"] == resumed.metrics["test_mse"]


def test_soft_tuner_on_a_bare_softemlp_uses_its_unbound_reps():
    """A SoftEMLP built directly (not through build_model) carries unbound rep expressions; the tuner used
    `a or b` on them, whose truth value (len) unbound reps refuse (RepError)."""
    from softsym.nn import SoftEMLP
    from softsym.soft.tuning import SoftTuner

    model = SoftEMLP("5V0+5V", "V**2", ["O(3)", "O(2)@z"], ch=16, num_layers=1)
    tuner = SoftTuner()
    tuner.attach(model, epochs=4, steps_per_epoch=2)
    assert [r.size for r, _ in tuner.reps] == [20, 20] and [r.size for _, r in tuner.reps] == [9, 9]
