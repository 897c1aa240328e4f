"""SoftModel: any nn.Module plus a sampled / Lie / projection penalty, driven by the Trainer and the tuners."""
import numpy as np
import pytest
import torch

from softsym import make_task
from softsym.errors import ConfigError
from softsym.soft import LiePenalty, LinearProjectionPenalty, SampledPenalty, SoftModel, SoftSymmetry
from softsym.train import TrainConfig, Trainer

CANDS = ["O(3)", "O(2)@x", "O(2)@y", "O(2)@z"]


def _net(n_in=20, n_out=9, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(n_in, 64), torch.nn.SiLU(), torch.nn.Linear(64, n_out))


@pytest.mark.parametrize("variant, true", [("o2z", "O(2)@z"), ("o2x", "O(2)@x")])
@pytest.mark.parametrize("penalty", ["sampled", "lie"])
def test_soft_tuner_puts_the_surviving_group_first(variant, true, penalty):
    task = make_task(f"mixed-inertia:{variant}", n_train=200, n_val=200, n_test=50, seed=0)
    sym = SoftSymmetry(CANDS)
    pen = (SampledPenalty(sym, task.rep_in, task.rep_out, n_samples=1, seed=0) if penalty == "sampled"
           else LiePenalty(sym, task.rep_in, task.rep_out, seed=0))
    model = SoftModel(_net(), pen)
    res = Trainer(model, task, TrainConfig(epochs=40, batch_size=100, lr=3e-3, progress=False), tuner="soft").fit()
    lam = sym.as_dict()
    assert max(lam, key=lam.get) == true
    assert lam[true] > 100 * max(v for k, v in lam.items() if k != true)
    assert lam[true] <= model.strength_max + 1e-9
    assert set(res.metrics["equivariance"]) >= set(CANDS)
    assert np.isfinite(res.metrics["test_mse"])


def test_regularization_is_the_penalty_on_the_last_training_batch():
    sym = SoftSymmetry(["O(3)", "SO(2)@z"], strengths=[2.0, 0.5])
    net = _net(3, 3).double()
    model = SoftModel(net, SampledPenalty(sym, "V", "V", n_samples=2, seed=7)).train()
    x = torch.randn(16, 3, dtype=torch.float64)
    out = model(x)
    assert torch.equal(out, net(x))
    reg = model.regularization()
    ref = SampledPenalty(sym, "V", "V", n_samples=2, seed=7)(net, x)
    assert torch.allclose(reg, ref, rtol=1e-12)
    reg.backward()
    assert float(net[0].weight.grad.abs().sum()) > 0
    with pytest.raises(ConfigError, match="follows a training forward pass"):
        model.regularization()  # one use per forward: the graph of those outputs is consumed


def test_residuals_need_inputs_until_a_batch_or_reference_is_given():
    sym = SoftSymmetry(["O(3)"])
    model = SoftModel(_net(3, 3), SampledPenalty(sym, "V", "V", seed=0))
    with pytest.raises(ConfigError, match="needs inputs"):
        model.residuals()
    model.set_reference_inputs(torch.randn(8, 3))
    assert model.residuals().shape == (1,)
    assert model.residuals(torch.randn(4, 3)).shape == (1,)
    with pytest.raises(ConfigError, match="reference inputs must be"):
        model.set_reference_inputs(torch.randn(8))


def test_projection_penalty_needs_no_inputs_and_strengths_are_checkpointed():
    net = _net(3, 9)
    sym = SoftSymmetry(["O(3)", "SO(2)@z"])
    pen = LinearProjectionPenalty(net, sym, {"0": ("V", "64*V0")})
    model = SoftModel(net, pen, rep_in="V", rep_out="V**2")
    assert model.residuals().shape == (2,) and float(model.regularization().detach()) > 0
    sym.set_strengths(torch.tensor([3.0, 4.0], dtype=torch.float64))
    assert model.state_dict()["symmetry.strengths"].tolist() == [3.0, 4.0]
    with pytest.raises(ConfigError, match="declared on another model"):
        SoftModel(_net(3, 9), pen)
    with pytest.raises(ConfigError, match="SampledPenalty, LiePenalty or LinearProjectionPenalty"):
        SoftModel(net, object())


@pytest.mark.parametrize("penalty, tuner", [("sampled", None), ("sampled", "soft"), ("lie1", None)])
def test_interrupted_and_resumed_soft_model_run_matches_an_uninterrupted_one(tmp_path, penalty, tuner):
    task = make_task("mixed-inertia:o2z", n_train=100, n_val=100, n_test=20, seed=0)

    def build():
        sym = SoftSymmetry(["O(3)", "O(2)@z"])
        pen = (SampledPenalty(sym, task.rep_in, task.rep_out, seed=0) if penalty == "sampled"
               else LiePenalty(sym, task.rep_in, task.rep_out, n_generators=1, seed=0))
        return SoftModel(_net().double(), pen)

    cfg = dict(epochs=8, batch_size=25, lr=3e-3, progress=False)
    a = build()
    Trainer(a, task, TrainConfig(**cfg), tuner=tuner).fit()
    b = build()
    Trainer(b, task, TrainConfig(**cfg, run_dir=str(tmp_path / "r"), stop_after=3), tuner=tuner).fit()
    c = build()  # a fresh process would build the model anew
    Trainer(c, task, TrainConfig(**cfg, run_dir=str(tmp_path / "r"), resume=True), tuner=tuner).fit()
    for (name, pa), pc in zip(a.named_parameters(), c.parameters()):
        assert torch.equal(pa, pc), name
    assert torch.equal(a.symmetry.strengths, c.symmetry.strengths)
