"""The symmetry report: a held-out test of each candidate symmetry with a trained probe (softsym report)."""
import json

import numpy as np
import pytest
import torch

from softsym import Trainer, TrainConfig, build_model, make_task, task_from_arrays
from softsym.cli import main
from softsym.data.synthetic import target_function
from softsym.errors import ConfigError
from softsym.report import symmetry_report


class Oracle(torch.nn.Module):
    """The task's own target function (raw x -> raw y) as a model: a probe with zero error."""

    def __init__(self, name):
        super().__init__()
        self.f = target_function(name)
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x):
        return torch.from_numpy(self.f(x.detach().double().numpy())) + 0 * self.dummy


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_oracle_probe_separates_true_and_broken_groups():
    task = make_task("mixed-inertia:o2z", n_train=8, n_val=8, n_test=200, seed=0)
    rep = symmetry_report(Oracle("mixed-inertia:o2z"), task, ["O(3)", "O(2)@x", "O(2)@z", "Signs(3)"])
    rows = {r["group"]: r for r in rep["candidates"]}
    # the oracle is exactly equivariant to the surviving groups: no loss change at all, hence no power
    assert rows["O(2)@z"]["verdict"] == "untestable" and abs(rows["O(2)@z"]["mean_gap"]) < 1e-20
    assert rows["Signs(3)"]["verdict"] == "untestable"
    for g in ("O(3)", "O(2)@x"):  # broken: every transformed sample is fitted worse
        assert rows[g]["verdict"] == "broken" and rows[g]["z"] > 10 and rows[g]["p_value"] < 1e-20
        assert rows[g]["mean_gap"] > 0
    assert rep["n_samples"] == 200 and rep["split"] == "test" and rep["base_mse"] < 1e-25


def test_mlp_probe_finds_the_surviving_group():
    # an unconstrained probe trained briefly tests every candidate; PER's o2z variant keeps only O(2)@z and the flips
    task = make_task("mixed-inertia:o2z", n_train=500, n_val=200, n_test=500, seed=0)
    model = build_model("mlp", task, ch=128)
    Trainer(model, task, TrainConfig(epochs=150, lr=1e-3, batch_size=250, schedule="cosine", seed=0,
                                     progress=False)).fit()
    rep = symmetry_report(model, task, ["O(3)", "O(2)@x", "O(2)@y", "O(2)@z", "Signs(3)"], seed=0)
    verdicts = {r["group"]: r["verdict"] for r in rep["candidates"]}
    assert verdicts == {"O(3)": "broken", "O(2)@x": "broken", "O(2)@y": "broken", "O(2)@z": "holds",
                        "Signs(3)": "holds"}
    rows = {r["group"]: r for r in rep["candidates"]}
    assert rows["O(3)"]["loss_increase"] > 0.5 and abs(rows["O(2)@z"]["loss_increase"]) < 0.1


def test_under_a_true_symmetry_the_statistic_is_centred():
    # an arbitrary (untrained) model: E[d] = 0 under a symmetry of the data, so |t| stays O(1) over seeds
    task = make_task("inertia", n_train=8, n_val=8, n_test=400, seed=1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.Tanh(), torch.nn.Linear(32, 9)).double()
    ts = [symmetry_report(model, task, ["O(3)"], seed=s)["candidates"][0]["z"] for s in range(6)]
    assert max(abs(t) for t in ts) < 4.0


def test_report_errors():
    task = make_task("inertia", n_train=8, n_val=8, n_test=8, seed=0)
    model = Oracle("inertia")
    with pytest.raises(ConfigError, match="split must be"):
        symmetry_report(model, task, split="holdout")
    with pytest.raises(ConfigError, match="group_samples"):
        symmetry_report(model, task, group_samples=0)
    with pytest.raises(ConfigError, match="sizes 30 -> 25"):
        symmetry_report(model, task, ["O(5)"])
    one = task_from_arrays(np.ones((3, 20)), np.ones((3, 9)), group="O(3)", rep_in="5V0+5V", rep_out="V**2",
                           n_val=1, n_test=1)
    with pytest.raises(ConfigError, match="at least 2"):
        symmetry_report(model, one)


def test_cli_report_writes_json_and_png(tmp_path, capsys):
    out = tmp_path / "rep"
    code, stdout, err = _run(["report", "--task", "mixed-inertia:o2x", "--n-train", "64", "--n-val", "32",
                              "--n-test", "64", "--epochs", "3", "--ch", "16", "--num-layers", "1",
                              "--group-samples", "4", "--out", str(out), "--no-progress"], capsys)
    assert code == 0, err
    payload = json.loads((out / "report.json").read_text())
    groups = [r["group"] for r in payload["candidates"]]
    assert groups[:4] == ["O(3)", "O(2)@x", "O(2)@y", "O(2)@z"] and "Skeleton(O(3))" in groups
    assert payload["probe"]["model"] == "mlp" and payload["n_samples"] == 64
    assert all(r["exact"] is not None and "overall" in r for r in payload["candidates"])  # one EMLP per candidate
    assert (out / "report.png").stat().st_size > 1000
    assert "symmetry tests on the test split" in stdout
    # a second run reuses the probe and rewrites its own report
    code, _, err = _run(["report", "--task", "mixed-inertia:o2x", "--n-train", "64", "--n-val", "32", "--n-test",
                         "64", "--epochs", "3", "--ch", "16", "--num-layers", "1", "--group-samples", "4",
                         "--out", str(out), "--no-progress", "--no-skeletons", "--no-exact"], capsys)
    assert code == 0, err
    again = json.loads((out / "report.json").read_text())["candidates"]
    assert len(again) == 4 and "exact" not in again[0]


def test_cli_report_never_replaces_a_foreign_file(tmp_path, capsys):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "report.json").write_text('{"mine": 1}')
    code, _, err = _run(["report", "--task", "inertia", "--n-train", "16", "--n-val", "8", "--n-test", "8",
                         "--epochs", "1", "--ch", "8", "--out", str(out), "--no-progress"], capsys)
    assert code != 0 and "was not written by softsym report" in err and "Traceback" not in err
    assert (out / "report.json").read_text() == '{"mine": 1}'


def test_example_magnetic_field_keeps_only_rotations_about_z(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "symmetry_report.py"
    spec = importlib.util.spec_from_file_location("example_symmetry_report", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--n", "1500", "--epochs", "150", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "symmetries the data supports: SO(2)@z, Skeleton(SO(2)@z)" in out  # v x B: no reflections, no tilts
    assert (tmp_path / "magnetic.csv").exists() and (tmp_path / "symmetry_report.png").exists()


def test_exact_model_comparison_and_combined_verdicts():
    from softsym.report import combine_verdicts, exact_model_comparison

    task = make_task("mixed-inertia:o2z", n_train=8, n_val=8, n_test=300, seed=0)
    oracle = Oracle("mixed-inertia:o2z")

    class Scaled(torch.nn.Module):  # a model that is off by a factor: much worse than the probe
        def __init__(self, k):
            super().__init__()
            self.k, self.inner = k, Oracle("mixed-inertia:o2z")

        def forward(self, x):
            return self.k * self.inner(x)

    probe = Scaled(1.05)
    out = exact_model_comparison(probe, {"good": oracle, "bad": Scaled(2.0), "same": Scaled(1.05)}, task)
    assert out["good"]["verdict"] == "holds" and out["good"]["loss_ratio"] < 1e-20
    assert out["bad"]["verdict"] == "broken" and out["bad"]["loss_ratio"] == pytest.approx(400, rel=1e-6)
    assert out["same"]["verdict"] == "holds" and out["same"]["loss_ratio"] == pytest.approx(1.0)
    assert combine_verdicts("broken", "holds") == "holds (function only)"
    assert combine_verdicts("holds", "holds") == "holds" and combine_verdicts("untestable", "holds") == "holds"
    assert combine_verdicts("holds", "broken") == "uncertain" and combine_verdicts("broken", None) == "broken"
    assert combine_verdicts("holds", "uncertain") == "holds" and combine_verdicts("broken", "uncertain") == "uncertain"


def test_cli_report_exact_models_judge_the_lorentz_function(tmp_path, capsys):
    # ParticleInteraction's inputs are N(0, I/16) four-momenta: no boost-invariant distribution, so the distribution
    # test calls O(1,3) broken; the exact O(1,3) EMLP fits far better than the MLP probe: the function is invariant
    out = tmp_path / "lor"
    code, _, err = _run(["report", "--task", "particle-interaction", "--n-train", "1000", "--n-val", "200",
                         "--n-test", "1000", "--epochs", "100", "--ch", "128", "--num-layers", "2",
                         "--candidates", "O(1,3)", "--no-skeletons", "--group-samples", "16", "--out", str(out),
                         "--no-progress"], capsys)
    assert code == 0, err
    row = json.loads((out / "report.json").read_text())["candidates"][0]
    assert row["verdict"] == "broken" and row["exact"]["verdict"] == "holds"
    assert row["exact"]["loss_ratio"] < 0.5 and row["overall"] == "holds (function only)"
