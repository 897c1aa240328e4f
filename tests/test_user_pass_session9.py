"""Session 9 user pass: clear errors for input dtype mismatches, zero equivariant spaces judged fairly."""
import pytest
import torch

from softsym.errors import DataError, SoftsymError
from softsym.nn import EMLP, MLP, RPP, SoftEMLP


@pytest.mark.parametrize("make", [
    lambda: EMLP("V", "V", "O(3)", ch=16, num_layers=1),
    lambda: MLP("V", "V", "O(3)", ch=16, num_layers=1),
    lambda: RPP("V", "V", "O(3)", ch=16, num_layers=1),
    lambda: SoftEMLP("V", "V", ["O(3)", "O(2)@z"], ch=16, num_layers=1),
])
def test_dtype_mismatch_is_a_clear_data_error(make):
    model = make()
    with pytest.raises(DataError, match=r"float32 parameters but got a torch.float64 input.*model.double\(\)"):
        model(torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(DataError, match="int64"):
        model(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(DataError, match="torch.Tensor"):
        model([[0.0, 1.0, 2.0]])
    model.double()
    out = model(torch.randn(4, 3, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (4, 3)
    assert issubclass(DataError, SoftsymError)


def _zero_space_model(group, dtype=torch.float64):
    """GroupAverage of an MLP onto Hom(V**2, V) under Signs(3), whose only equivariant map is 0."""
    import softsym
    from softsym.wrappers import GroupAverage

    torch.manual_seed(0)
    g = softsym.group(group)
    net = torch.nn.Sequential(torch.nn.Linear(9, 32), torch.nn.SiLU(), torch.nn.Linear(32, 3)).to(dtype)
    return GroupAverage(net, g, "V**2", "V")


def test_zero_equivariant_space_gets_a_note_but_keeps_the_error_verdict():
    import softsym
    from softsym.metrics import equivariance_error

    model = _zero_space_model("Signs(3)")
    x = torch.randn(32, 9, dtype=torch.float64)
    res = equivariance_error(model, "Signs(3)", "V**2", "V", x, 8)
    assert res.output_rms < 1e-14 * res.input_rms  # round-off of the zero map
    assert res.negligible_output()
    result = softsym.check(model, ["Signs(3)"], "V**2", "V")["Signs(3)"]
    if result.verdict != "exact":  # round-off over round-off: the note explains it
        assert "as small as round-off" in result.note and result.to_dict()["note"] == result.note


@pytest.mark.parametrize("scale, dtype", [(1e-5, torch.float32), (1e-14, torch.float64), (1e-15, torch.float64)])
def test_tiny_outputs_of_a_broken_model_are_never_called_exact(scale, dtype):
    """regression: the zero-map hint overrode the verdict, so a random map times 1e-5 (float32) was 'exact'."""
    import softsym

    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 3).to(dtype)
    report = softsym.check(lambda v: scale * lin(v.to(dtype)), ["S(3)", "O(3)"], "V", "V", lie=False)
    assert all(r.verdict == "not equivariant" for r in report.results)


def test_small_but_real_outputs_are_not_negligible():
    """a broken map scaled by 1e-12 is still judged on its errors (not taken for round-off)."""
    import softsym

    r = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    report = softsym.check(lambda v: 1e-12 * (v @ r.T), ["O(3)"], "V", "V")
    assert report["O(3)"].verdict == "not equivariant" and report["O(3)"].note == ""
    assert not report["O(3)"].equivariance.negligible_output()


def test_cli_report_nproc_matches_one_process(tmp_path, capsys):
    """softsym report --nproc 2 trains its probe data-parallel and reaches the one-process result."""
    import json

    from softsym.cli import main

    payloads = []
    for n in (1, 2):
        out = tmp_path / f"rep{n}"
        with pytest.raises(SystemExit) as exc:
            main(["report", "--task", "mixed-inertia:o2z", "--n-train", "48", "--n-val", "16", "--n-test", "32",
                  "--epochs", "2", "--ch", "16", "--num-layers", "1", "--group-samples", "4", "--no-exact",
                  "--no-skeletons", "--batch-size", "16", "--nproc", str(n), "--out", str(out), "--no-progress"])
        assert exc.value.code == 0, capsys.readouterr().err
        payloads.append(json.loads((out / "report.json").read_text()))
    a, b = (p["probe"]["test_mse"] for p in payloads)
    assert a == pytest.approx(b, rel=1e-4)
    assert [r["group"] for r in payloads[0]["candidates"]] == [r["group"] for r in payloads[1]["candidates"]]


@pytest.mark.parametrize("scale", [1e160, 1e-170])
def test_extreme_scales_neither_overflow_nor_underflow_into_exact(scale):
    """regression: squares overflowed (inf / inf -> 0) or underflowed (0 / 0 -> 0), so a random map was 'exact'."""
    import softsym

    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 3).double()
    out = softsym.check(lambda v: scale * lin(v), ["S(3)"], "V", "V")["S(3)"]
    inp = softsym.check(lin, ["S(3)"], "V", "V", inputs=scale * torch.randn(8, 3, dtype=torch.float64))["S(3)"]
    assert out.verdict == inp.verdict == "not equivariant"
    assert 0.1 < out.mean_error < 2 and 0.1 < inp.mean_error < 2
    exact = softsym.check(lambda v: scale * v, ["O(3)"], "V", "V", lie=False)["O(3)"]
    assert exact.verdict == "exact"


def test_plain_callable_around_a_float32_model_is_judged_in_float32():
    """regression: check judged `lambda x: net(x.float())` against the float64 threshold (and its jvp against
    float64 finite differences), so an exactly equivariant float32 model came out 'approximate' with a warning."""
    import softsym

    torch.manual_seed(0)

    class Radial(torch.nn.Module):  # v * MLP(|v|): O(3)-equivariant, float32
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

        def forward(self, v):
            return v * self.net(v.norm(dim=-1, keepdim=True))

    m = Radial()
    report = softsym.check(lambda x: m(x.float()), "O(3)", "V", "V")
    assert report.dtype == "float32" and report.exact_tol == 1e-5
    assert report["O(3)"].verdict == "exact" and report["O(3)"].lie.method == "jvp"
    broken = softsym.check(lambda x: m(x.float()) + x.float() ** 2, "O(3)", "V", "V", lie=False)
    assert broken["O(3)"].verdict == "not equivariant"


def test_check_cli_dotted_factory_and_no_lie_message(tmp_path, capsys, monkeypatch):
    from softsym.cli import main

    (tmp_path / "zoo.py").write_text("import torch\nclass Zoo:\n    @staticmethod\n    def make():\n"
                                     "        return torch.nn.Linear(3, 3).double()\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["check", "zoo.py:Zoo.make", "-g", "O(3)", "--rep-in", "V", "--rep-out", "V", "--no-lie"])
    out = capsys.readouterr()
    assert exc.value.code == 0, out.err
    assert "Lie derivatives skipped (--no-lie): O(3)" in out.out and "no Lie algebra" not in out.out
    with pytest.raises(SystemExit) as exc:
        main(["check", "zoo.py:Zoo.nope", "-g", "O(3)", "--rep-in", "V", "--rep-out", "V"])
    out = capsys.readouterr()
    assert exc.value.code == 2 and "has no attribute 'nope'" in out.err + out.out and "make" in out.err + out.out
    assert "Traceback" not in out.err + out.out


def _float32_dihedral():
    import math

    import softsym

    th = 2 * math.pi / 6
    rot = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])  # float32, as torch defaults
    flip = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    return softsym.FiniteGroup(torch.stack([rot, flip]))


def test_inexact_generators_warn_and_never_silently_lose_basis_vectors():
    """regression: float32 D(6) generators gave basis dim 0 for V**2 (true dim 1) with no warning."""
    import softsym
    from softsym.errors import SolverError
    from softsym.groups.base import GeneratorPrecisionWarning

    with pytest.warns(GeneratorPrecisionWarning, match="float32"):
        g = _float32_dihedral()
    with pytest.raises(SolverError, match="nearly invariant vectors.*RESIDUAL_TOL"):
        softsym.equivariant_basis(softsym.rep("V**2", g), cache=False)
    exact = softsym.FiniteGroup(g.discrete_np.astype("float64"))  # the same (rounded) values in float64: no warning
    assert exact.d == 2
    import math

    th = 2 * math.pi / 6
    good = softsym.FiniteGroup(torch.tensor([[[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]],
                                             [[1.0, 0.0], [0.0, -1.0]]], dtype=torch.float64))
    assert softsym.equivariant_basis(softsym.rep("V**2", good), cache=False).dim == 1
    assert softsym.equivariant_basis(softsym.rep("V**4", good), cache=False).dim == 3


def test_zero_lie_generators_sample_finitely_and_solve():
    import numpy as np

    import softsym

    zero = softsym.Group(lie_algebra=np.zeros((1, 3, 3)))
    assert np.isfinite(zero.sample(3, seed=0).numpy()).all()
    assert softsym.equivariant_basis(softsym.rep("V**5", zero), cache=False).dim == 3**5  # everything invariant
    padded = softsym.Group(lie_algebra=np.concatenate([softsym.SO(3).lie_np, np.zeros((1, 3, 3))]))
    assert np.isfinite(padded.sample(3, seed=0).numpy()).all()
    assert softsym.equivariant_basis(softsym.rep("V**2", padded), cache=False).dim == 1
    assert softsym.equivariant_basis(softsym.rep("V**4", padded), cache=False).dim == 3


def test_deeply_nested_specs_are_parse_errors_not_recursion_errors(capsys):
    import softsym
    from softsym.cli import main
    from softsym.errors import GroupError, RepParseError

    with pytest.raises(RepParseError, match="nested too deeply"):
        softsym.rep("(" * 300 + "V" + ")" * 300)
    with pytest.raises(GroupError, match="nested too deeply"):
        softsym.group("(" * 400 + "O(3)" + ")" * 400)
    with pytest.raises(SystemExit) as exc:
        main(["solve", "O(3)", "(" * 300 + "V" + ")" * 300])
    out = capsys.readouterr()
    assert exc.value.code == 2 and "nested too deeply" in out.err + out.out and "Traceback" not in out.err


def test_solve_refuses_an_empty_rep_out(capsys):
    from softsym.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["solve", "S(3)", "V**3", ""])
    out = capsys.readouterr()
    assert exc.value.code == 2 and "the string is empty" in out.err + out.out


def test_soft_model_candidates_as_group_objects_are_measured_and_bad_candidates_refused():
    import softsym
    from softsym import Trainer, TrainConfig, build_model, make_task
    from softsym.errors import ConfigError

    task = make_task("inertia", n_train=24, n_val=12, n_test=12, seed=0)
    model = build_model("soft", task, ch=16, num_layers=1, candidates=[softsym.group("O(3)"), softsym.group("O(2)@z")])
    metrics = Trainer(model, task, TrainConfig(epochs=1, batch_size=12, progress=False)).fit().metrics
    assert set(metrics["strengths"]) <= set(metrics["equivariance"])  # every candidate is measured
    assert "O(2)@z" in metrics["equivariance"]
    with pytest.raises(ConfigError, match="candidates is empty"):
        build_model("soft", task, ch=16, candidates=[])
    with pytest.raises(ConfigError, match="candidate groups must be"):
        SoftEMLP("5V0+5V", "V**2", None, ch=8)
