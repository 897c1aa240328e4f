"""Regressions found by a third user pass (metrics, penalties, wrappers, trainer, CLI)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import softsym
from softsym import EquivariantLinear, SoftEMLP, make_task
from softsym.errors import ConfigError, ModelError
from softsym.metrics import subspace_energy
from softsym.soft import LiePenalty, SampledPenalty, SoftSymmetry
from softsym.soft.tuning import PERTuner
from softsym.train import TrainConfig, Trainer
from softsym.wrappers import FrameAverage


def test_strengths_stay_float64_when_the_model_is_cast():
    s = SoftSymmetry(["O(3)", "SO(3)"], strengths=[1e5, 1e-8])
    s.half()
    assert s.strengths.dtype == torch.float64
    assert s.strengths.tolist() == [1e5, 1e-8]
    assert torch.isfinite(s.penalty(torch.ones(2, dtype=torch.float64)))


def test_check_json_is_strict_for_zero_outputs(tmp_path):
    from softsym.cli import main as cli_main

    (tmp_path / "zm.py").write_text("import torch\ndef make():\n    return lambda x: torch.relu(-x[:, :1]).repeat(1, 3)\n")
    np.savez(tmp_path / "pos.npz", x=np.abs(np.random.default_rng(0).standard_normal((8, 3))))
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exc:
        cli_main(["check", f"{tmp_path / 'zm.py'}:make", "-g", "O(3)", "--rep-in", "V", "--rep-out", "V",
                  "--inputs", str(tmp_path / "pos.npz"), "--json", str(out)])
    assert exc.value.code in (0, None)

    def refuse(token):
        raise ValueError(token)

    data = json.loads(out.read_text(), parse_constant=refuse)
    assert data["results"][0]["equivariance"]["plain_max"] == "inf"


def test_subspace_energy_refuses_a_transposed_weight():
    g = softsym.group("O(3)")
    basis = softsym.equivariant_basis(softsym.Hom(softsym.rep("V0+V", g), softsym.rep("V", g)))
    w = basis.expand(torch.ones(1, dtype=torch.float64)).reshape(3, 4)
    assert subspace_energy(w, basis) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="transpose"):
        subspace_energy(w.T, basis)


def test_frame_average_names_a_non_tensor_output():
    fa = FrameAverage(lambda x: x.sum(1).numpy(), "O(3)", output="vector")
    with pytest.raises(ModelError, match="ndarray"):
        fa(torch.randn(2, 5, 3, dtype=torch.float64))


@pytest.mark.parametrize("cls", [SampledPenalty, LiePenalty])
def test_penalties_refuse_nan_outputs(cls):
    sym = SoftSymmetry(["O(3)", "SO(3)"])
    with pytest.raises(ModelError, match="NaN"):
        cls(sym, "V", "V").residuals(lambda v: v * float("nan"), torch.randn(4, 3, dtype=torch.float64))


def test_huge_sample_counts_are_refused():
    from softsym.metrics import group_elements

    with pytest.raises(ConfigError, match="GiB"):
        group_elements("O(3)", 10**9)


def test_equivariant_linear_cache_sees_data_edits():
    layer = EquivariantLinear("2V+V0", "V**2", group="O(3)").eval()
    x = torch.randn(4, 7)
    with torch.no_grad():
        y1 = layer(x)
        layer.weight_coef.data.mul_(3.0)
        y2 = layer(x)
    layer.train()
    y3 = layer(x).detach()
    assert not torch.equal(y1, y2)
    assert torch.equal(y2, y3)


def test_project_accepts_any_spelling_of_a_candidate():
    m = SoftEMLP("4V", "V0", ["O(1,3)", "O(3)@[1,2,3]:4"], ch=4, num_layers=1)
    m.project_("O(3)@[1,2,3]:4")
    m.project_("o(1,3)")
    with pytest.raises(ConfigError, match="unknown candidate"):
        m.project_("SO(2)")


def test_trainer_checks_outputs_and_options_before_training():
    task = make_task("inertia", n_train=40, n_val=20, n_test=20)

    class Narrow(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.lin = torch.nn.Linear(20, k)

        def forward(self, x):
            return self.lin(x)

    class NoParams(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 9, dtype=x.dtype)

    for k in (1, 3):
        with pytest.raises(ModelError, match="targets"):
            Trainer(Narrow(k), task, TrainConfig(epochs=50, progress=False)).fit()
    with pytest.raises(ConfigError, match="no trainable parameters"):
        Trainer(NoParams(), task, TrainConfig(epochs=1))
    with pytest.raises(ConfigError, match="tuner_options"):
        TrainConfig(tuner_options=["x"]).validate()
    with pytest.raises(ConfigError, match="run_dir"):
        TrainConfig(run_dir=5).validate()


def test_per_tuner_options_are_validated():
    for bad in ({"power": float("nan")}, {"adjust_at": 0}, {"window": -1}, {"lambda_init": -1.0}):
        with pytest.raises(ConfigError):
            PERTuner(**bad)


def test_compare_model_list_keeps_commas_inside_group_specs():
    from softsym.cli.train import _group_key, _split_top_level

    assert _split_top_level("mlp,emlp:SO+(1,3),emlp:O(3)@[1,2,3]:4") == ["mlp", "emlp:SO+(1,3)", "emlp:O(3)@[1,2,3]:4"]
    assert _group_key("O(3)") == _group_key("o(3)")
