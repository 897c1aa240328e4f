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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_zero_equivariant_space_is_judged_exact_with_a_note(dtype):
    import softsym
    from softsym.metrics import equivariance_error

    model = _zero_space_model("Signs(3)", dtype)
    x = torch.randn(32, 9, dtype=torch.float64)
    res = equivariance_error(model, "Signs(3)", "V**2", "V", x, 8)
    assert res.output_rms < 1e-4 * res.input_rms  # round-off of the zero map
    assert res.negligible_output()
    report = softsym.check(model, ["Signs(3)"], "V**2", "V")
    assert report["Signs(3)"].verdict == "exact"
    assert "zero to round-off" in report["Signs(3)"].note
    assert report.results[0].to_dict()["note"]


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
