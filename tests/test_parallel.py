"""Data parallelism: TrainConfig(world_size=N) spawns N gloo processes that share every minibatch; the result must
equal the single-process one up to summation order, resume across world sizes, and report errors cleanly."""
from __future__ import annotations

import pytest
import torch

from softsym import build_model, make_task
from softsym.errors import ConfigError
from softsym.parallel import SingleProcess, TorchDistributed, threads_per_process
from softsym.train import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture(scope="module")
def task():
    # 101 rows in batches of 33: uneven shares (17 + 16) and a last batch of 2 rows
    return make_task("mixed-inertia:o2z", n_train=101, n_val=40, n_test=40, seed=0)


def _fit(task, world_size, **kw):
    model = build_model("soft", task, ch=12, num_layers=1, seed=0).double()
    cfg = TrainConfig(epochs=4, batch_size=33, lr=3e-3, progress=False, world_size=world_size, **kw)
    return Trainer(model, task, cfg).fit()


def test_two_processes_match_one(task, tmp_path):
    one = _fit(task, 1)
    two = _fit(task, 2, run_dir=str(tmp_path / "run"))
    diff = float((_flat(one.model) - _flat(two.model)).abs().max())
    assert diff < 1e-12, diff
    assert abs(one.metrics["test_mse"] - two.metrics["test_mse"]) <= 1e-9 * one.metrics["test_mse"]
    for a, b in zip(one.metrics["strengths"].values(), two.metrics["strengths"].values()):
        assert a == pytest.approx(b, rel=1e-9)
    assert [r["epoch"] for r in two.log] == [1, 2, 3, 4]
    assert (tmp_path / "run" / "metrics.json").exists() and (tmp_path / "run" / "best.pt").exists()
    # a 2-process run resumed by one process finishes like the uninterrupted single-process run
    _fit(task, 2, run_dir=str(tmp_path / "split"), stop_after=2)
    resumed = _fit(task, 1, run_dir=str(tmp_path / "split"), resume=True)
    assert float((_flat(one.model) - _flat(resumed.model)).abs().max()) < 1e-12


def test_errors_from_the_processes_are_softsym_errors(task, tmp_path):
    _fit(task, 1, run_dir=str(tmp_path / "run"), stop_after=1)
    model = build_model("soft", task, ch=12, num_layers=1, seed=0).double()
    cfg = TrainConfig(epochs=5, batch_size=33, progress=False, world_size=2, run_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="different config"):
        Trainer(model, task, cfg).fit()


def test_strategies_and_validation():
    with pytest.raises(ConfigError, match="process group"):
        TorchDistributed()
    s = SingleProcess()
    idx = torch.arange(5)
    assert torch.equal(s.shard(idx), idx) and s.reduce_mean(2.5) == 2.5 and s.is_main
    assert threads_per_process(2, total=2) == 1 and threads_per_process(1, total=8) == 8
    assert threads_per_process(16, total=2) == 1
    for bad in (0, -2, 2.0, True):
        with pytest.raises(ConfigError, match="world_size"):
            TrainConfig(world_size=bad).validate()
