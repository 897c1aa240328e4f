"""Adversarial user pass over user data (load_task / task_from_arrays / --data), the symmetry report and
`softsym fit|compare|report`: regressions for the bugs found."""
import json
import os

import numpy as np
import pytest
import torch

from softsym import build_model, load_task, task_from_arrays
from softsym.cli import main
from softsym.errors import ConfigError, DataError
from softsym.metrics import equivariance_error
from softsym.report import combine_verdicts, exact_model_comparison, symmetry_report


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6))
    y = (x[:, :3] * x[:, 3:]).sum(1)
    return x, y


def _rows(x, y, fmt="{:.6g}"):
    return [[fmt.format(v) for v in list(a) + [b]] for a, b in zip(x, y)]


def _load(path, **kw):
    return load_task(path, group="O(3)", rep_in="2V", rep_out="V0", **kw)


# ------------------------------------------------------------------ CSV oddities
def test_csv_oddities_read_like_a_plain_csv(tmp_path):
    x, y = _data()
    rows = _rows(x, y)
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(",".join(r) for r in rows) + "\n")
    ref = _load(plain)
    variants = {
        "bom.csv": ("\ufeff" + "\n".join(",".join(r) for r in rows)).encode("utf-8"),  # BOM, no header
        "quoted.csv": "\n".join(",".join(f'"{v}"' for v in r) for r in rows).encode(),
        "trailing.csv": "\r\n".join(",".join(r) + "," for r in rows).encode(),  # Excel: trailing commas, CRLF
        "semicolon.csv": ("a;b;c;d;e;f;y\n" + "\n".join(";".join(v.replace(".", ",") for v in r) for r in rows)
                          ).encode(),  # European: ';' and decimal commas
        "commas.txt": "\n".join(",".join(r) for r in rows).encode(),
        "inf_header.csv": ("x,y,z,inf,nan,a,target\n" + "\n".join(",".join(r) for r in rows)).encode(),
        "utf16.csv": ("a,b,c,d,e,f,y\n" + "\n".join(",".join(r) for r in rows)).encode("utf-16"),
    }
    for name, raw in variants.items():
        p = tmp_path / name
        p.write_bytes(raw)
        t = _load(p)
        assert torch.equal(t.x_train, ref.x_train) and torch.equal(t.y_test, ref.y_test), name


def test_csv_errors_name_the_file_line(tmp_path):
    x, y = _data(12)
    rows = [",".join(r) for r in _rows(x, y)]
    rows[4] = "abc," + rows[4].split(",", 1)[1]
    p = tmp_path / "bad.csv"
    p.write_text("a,b,c,d,e,f,y\n" + "\n".join(rows))
    with pytest.raises(DataError, match=r"line 6: data row 5 has a non-numeric entry 'abc'"):
        _load(p)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\x00\x01\x02garbage\xff\n1,2")
    with pytest.raises(DataError, match="is not a text table"):
        _load(binary)


def test_large_csv_reads_fast_and_exactly(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.standard_normal((3000, 7))
    p = tmp_path / "big.csv"
    np.savetxt(p, table, delimiter=",", header="a,b,c,d,e,f,y", comments="")
    t = _load(p, n_val=500, n_test=500)
    assert len(t.x_train) == 2000
    assert np.isin(t.x_train.numpy()[:, 0], table[:, 0]).all()


# ------------------------------------------------------------------ NPZ and arrays
def test_npz_layouts_and_arrays_that_used_to_pass_or_mislead(tmp_path):
    x, y = _data()
    both = tmp_path / "both.npz"
    np.savez(both, x=x, y=y, x_train=x, y_train=y)  # which arrays are the data?
    with pytest.raises(DataError, match="ambiguous"):
        _load(both)
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([list(r) for r in x], dtype=object), y=y)
    with pytest.raises(DataError, match="object arrays") as exc:
        _load(obj)
    assert "allow_pickle" not in str(exc.value)
    fake = tmp_path / "fake.npz"
    fake.write_text("1,2,3\n")
    with pytest.raises(DataError, match="cannot read .* as an .npz archive: it is not a zip") as exc:
        _load(fake)
    assert "allow_pickle" not in str(exc.value)
    with pytest.raises(DataError, match="is complex"):  # the imaginary part used to be dropped with a warning
        task_from_arrays(x + 1j, y, group="O(3)", rep_in="2V", rep_out="V0")
    real = task_from_arrays(x + 0j, y, group="O(3)", rep_in="2V", rep_out="V0")
    assert real.x_train.dtype == torch.float64
    with pytest.raises(DataError, match=r"reshape\(len\(x\), -1\)"):
        task_from_arrays(x.reshape(30, 2, 3), y, group="O(3)", rep_in="2V", rep_out="V0")


@pytest.mark.parametrize("n", [1, 2])
def test_too_few_samples_say_how_many_are_needed(n):
    x, y = _data(n)
    with pytest.raises(DataError, match="needs at least 3 samples") as exc:
        task_from_arrays(x, y, group="O(3)", rep_in="2V", rep_out="V0")
    assert "train -" not in str(exc.value)


def test_candidates_are_checked_when_the_task_is_made():
    x, y = _data()
    kw = dict(group="O(3)", rep_in="2V", rep_out="V0")
    with pytest.raises(ConfigError, match=r"candidate 'O\(2\)' acts on R\^2.*6 inputs"):
        task_from_arrays(x, y, candidates=["O(3)", "O(2)"], **kw)
    with pytest.raises(ConfigError, match="complex group"):
        task_from_arrays(x, y, candidates=["SU(3)"], **kw)
    with pytest.raises(ConfigError, match="same group"):
        task_from_arrays(x, y, candidates=["o(3)", "O(3)"], **kw)
    with pytest.raises(ConfigError, match="wrap it in a list"):
        task_from_arrays(x, y, candidates="O(3)", **kw)
    with pytest.raises(ConfigError, match="complex group"):
        task_from_arrays(x[:, :4], y, group="SU(2)", rep_in="2V", rep_out="V0")
    t = task_from_arrays(x, y, candidates=["o(3)", "o(2)@z"], **kw)
    assert t.candidates == ("O(3)", "O(2)@z")
    assert t.info["group"] == "O(3)" and t.info["rep_in"] == "2*V" and t.info["candidates"] == ["O(3)", "O(2)@z"]


@pytest.mark.parametrize("group, rin, rout", [("S(4)", "V**2", "V0+V"), ("SO(1,3)", "2V", "V0+V"),
                                              ("SO(2)*S(3)", "2V", "V0+V"), ("O(2)", "V0+2V", "V**2")])
def test_normalised_user_task_keeps_an_exact_emlp_equivariant(group, rin, rout):
    from softsym.groups.parse import parse_group
    from softsym.reps.algebra import rep

    g = parse_group(group)
    a, b = rep(rin, g).size, rep(rout, g).size
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, a)) * rng.uniform(0.1, 10, a) + 3
    y = rng.standard_normal((40, b)) * rng.uniform(0.1, 10, b) + 5
    t = task_from_arrays(x, y, group=group, rep_in=rin, rep_out=rout)
    m = build_model("emlp", t, ch=8, num_layers=1, dtype=torch.float64)
    assert equivariance_error(m, group, rin, rout, t.x_test, 4).max < 1e-10


# ------------------------------------------------------------------ run directories on user data
def test_resume_notices_changed_reps_and_data_but_not_the_path_spelling(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = _data(40)
    np.savez("d.npz", x=x, y=y)
    base = ["fit", "--group", "O(3)", "--rep-out", "V0", "--model", "mlp", "--epochs", "1", "--ch", "8",
            "--num-layers", "1", "--run-dir", "run", "--no-progress"]
    code, _, err = _run(base + ["--data", "d.npz", "--rep-in", "2V"], capsys)
    assert code == 0, err
    # the same file by its absolute path: the same run (used to be refused: task.info.source differed)
    code, _, err = _run(base + ["--data", str(tmp_path / "d.npz"), "--rep-in", "2V", "--resume"], capsys)
    assert code == 0, err
    # another rep of the same size used to resume silently (an MLP's weights fit any rep)
    code, _, err = _run(base + ["--data", "d.npz", "--rep-in", "6V0", "--resume"], capsys)
    assert code == 2 and "rep_in" in err and "6*V0" in err and "Traceback" not in err
    y[0] += 1
    np.savez("d.npz", x=x, y=y)
    code, _, err = _run(base + ["--data", "d.npz", "--rep-in", "2V", "--resume"], capsys)
    assert code == 2 and "has changed since that run" in err


# ------------------------------------------------------------------ symmetry report
def _probe_task(n_test, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((400 + n_test, 3))
    return task_from_arrays(a, a[:, 2] ** 2, group="O(2)@z", rep_in="V", rep_out="V0", n_val=20, n_test=n_test,
                            seed=seed)


def test_report_complex_candidate_is_untestable_not_a_traceback():
    task = _probe_task(50)
    model = build_model("mlp", task, ch=8, num_layers=1)
    rep = symmetry_report(model, task, ["O(2)@z", "SU(3)"], group_samples=2)
    rows = {r["group"]: r for r in rep["candidates"]}
    assert rows["SU(3)"]["verdict"] == "untestable" and "complex" in rows["SU(3)"]["reason"]
    assert rows["O(2)@z"]["verdict"] != "untestable"


class _Constant(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(float(value), dtype=torch.float64))

    def forward(self, x):
        return self.value.detach().expand(len(x), 1)


def test_tiny_test_split_is_untestable_instead_of_holds():
    task = _probe_task(2)
    model = build_model("mlp", task, ch=8, num_layers=1)
    rep = symmetry_report(model, task, ["O(3)", "O(2)@z"], group_samples=2)
    assert [r["verdict"] for r in rep["candidates"]] == ["untestable", "untestable"]
    assert "too few" in rep["candidates"][0]["reason"]
    # exact-model comparison: a 100x worse model used to "hold" because p >= 0.05 is all 2 samples can give
    worse = _Constant(100.0)
    res = exact_model_comparison(model, {"O(3)": worse}, task)["O(3)"]
    assert res["loss_ratio"] > 1.5 and res["verdict"] == "uncertain" and "too few" in res["reason"]


def test_exact_comparison_of_two_perfect_models_holds_with_ratio_one():
    rng = np.random.default_rng(0)
    task = task_from_arrays(rng.standard_normal((40, 3)), np.zeros(40), group="O(3)", rep_in="V", rep_out="V0")
    zero = build_model("mlp", task, ch=8, num_layers=1)
    with torch.no_grad():
        for p in zero.parameters():
            p.zero_()
    res = exact_model_comparison(zero, {"O(3)": zero}, task)["O(3)"]
    assert res["loss_ratio"] == 1.0 and res["verdict"] == "holds"


def test_report_functions_validate_their_arguments():
    task = _probe_task(20)
    model = build_model("mlp", task, ch=8, num_layers=1)
    for kw, match in (({"seed": -1}, "seed must be a non-negative integer"),
                      ({"batch": 0}, "batch must be a positive integer")):
        with pytest.raises(ConfigError, match=match):
            symmetry_report(model, task, ["O(3)"], **kw)
    with pytest.raises(ConfigError, match="wrap it in a list"):
        symmetry_report(model, task, "O(3)")
    with pytest.raises(ConfigError, match="split must be"):
        exact_model_comparison(model, {"O(3)": model}, task, split="tests")
    with pytest.raises(ConfigError, match="unknown exact-model verdict"):
        combine_verdicts("holds", "hold")
    with pytest.raises(ConfigError, match="unknown distribution-test verdict"):
        combine_verdicts("brokn", None)
    assert combine_verdicts("broken", "holds") == "holds (function only)"


def test_report_verdicts_on_a_rotation_invariant_pseudoscalar():
    # y = (a x b)_z + a_z: invariant under rotations about z, odd under reflections in the xy-plane
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((1200, 3)), rng.standard_normal((1200, 3))
    y = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0] + a[:, 2]
    task = task_from_arrays(np.concatenate([a, b], 1), y, group="SO(2)@z", rep_in="2V", rep_out="V0")
    from softsym import Trainer, TrainConfig

    model = build_model("mlp", task, ch=32, num_layers=2)
    Trainer(model, task, TrainConfig(epochs=60, lr=3e-3, batch_size=100, progress=False)).fit()
    rep = symmetry_report(model, task, ["O(3)", "O(2)@z", "SO(2)@z"], group_samples=8)
    assert {r["group"]: r["verdict"] for r in rep["candidates"]} == {"O(3)": "broken", "O(2)@z": "broken",
                                                                     "SO(2)@z": "holds"}


def test_cli_report_reuses_the_probe_for_other_candidates_and_reports_complex_ones(tmp_path, capsys):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 3))
    np.savez(tmp_path / "d.npz", x=a, y=a[:, 2] ** 2)
    out = tmp_path / "rep"
    base = ["report", "--data", str(tmp_path / "d.npz"), "--group", "O(2)@z", "--rep-in", "V", "--rep-out", "V0",
            "--epochs", "2", "--ch", "8", "--num-layers", "1", "--group-samples", "2", "--out", str(out),
            "--no-progress", "--no-skeletons"]
    code, _, err = _run(base + ["--candidates", "O(3);O(2)@z"], capsys)
    assert code == 0, err
    # another candidate list (with a complex group) used to be refused (the probe's config held the candidates)
    # or to fail after training (no metrics for complex groups)
    code, stdout, err = _run(base + ["--candidates", "O(3);SU(3)"], capsys)
    assert code == 0, err
    rows = {r["group"]: r for r in json.loads((out / "report.json").read_text())["candidates"]}
    assert rows["SU(3)"]["verdict"] == "untestable" and rows["SU(3)"]["overall"] == "untestable"
    assert "SU(3)" in json.loads((out / "report.json").read_text())["exact_failed"]
    assert "complex group" in stdout
    code, _, err = _run(base + ["--candidates", "O(3);O(2)"], capsys)  # checked before training
    assert code == 2 and "O(2)" in err and "Traceback" not in err
    assert not (out / "probe-mlp-seed0").joinpath("..", "exact-O_2-seed0").exists()
