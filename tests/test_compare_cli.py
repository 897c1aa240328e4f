"""`softsym fit` and `softsym compare`: printed numbers, JSON/PNG outputs and clean errors (exit status 2)."""
import json
import re

import pytest

from softsym.cli import main


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


TINY = ["--n-train", "24", "--n-val", "12", "--n-test", "12", "--epochs", "2", "--ch", "8", "--num-layers", "1",
        "--batch-size", "12", "--no-progress"]


def test_fit_prints_final_metrics(capsys, tmp_path):
    code, out, err = _run(["fit", "--task", "inertia", "--model", "emlp", "--seed", "0", *TINY,
                           "--run-dir", str(tmp_path / "run")], capsys)
    assert code == 0, err
    m = re.search(r"test_mse=([0-9.eE+-]+)", out)
    assert m, out
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert float(m.group(1)) == pytest.approx(saved["test_mse"], rel=1e-6)
    assert "equivariance error O(3)" in out and "parameters" in out
    assert saved["equivariance"]["O(3)"]["mean"] < 1e-10  # exact EMLP, float64 check


def test_fit_json_and_resume(capsys, tmp_path):
    args = ["fit", "--task", "mixed-inertia:o2z", "--model", "soft", "--json", *TINY, "--run-dir", str(tmp_path / "r")]
    code, out, err = _run(args, capsys)
    assert code == 0, err
    first = json.loads(out)
    per4 = ["O(3)", "O(2)@x", "O(2)@y", "O(2)@z"]
    assert first["model"] == "soft" and list(first["strengths"]) == per4 + [f"Skeleton({c})" for c in per4]
    assert "history" not in first
    code, out, err = _run(args, capsys)  # same run dir without --resume: refused, nothing lost
    assert code == 2 and "--resume" in err
    code, out, err = _run(args + ["--resume"], capsys)
    assert code == 0 and json.loads(out)["test_mse"] == first["test_mse"]


@pytest.mark.parametrize("argv, message", [
    (["fit", "--task", "inertia3", "--model", "mlp"], "unknown task"),
    (["fit", "--task", "inertia", "--model", "emlp:O(5)"], "O(5)"),
    (["fit", "--task", "inertia", "--model", "resnet"], "unknown model"),
    (["compare", "--task", "mixed-inertia:o4", "--models", "mlp"], "unknown task"),
    (["compare", "--task", "inertia", "--models", "mlp,cnn"], "unknown model"),
])
def test_bad_names_exit_2_with_a_message(capsys, argv, message):
    code, out, err = _run(argv + ["--no-progress"], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["fit", "--task", "inertia", "--seed", "-1"], "seed must be a non-negative integer"),  # was a numpy traceback
    (["fit", "--task", "inertia", "--resume"], "resume needs a run directory"),  # was silently a fresh run
    (["compare", "--task", "inertia", "--models", "mlp,emlp:O(5)"], "O(5)"),  # was found after training mlp
    (["compare", "--task", "inertia", "--models", "mlp", "--lr", "-1"], "lr must be a positive number"),
])
def test_bad_values_exit_2_before_any_training(capsys, tmp_path, argv, message):
    code, out, err = _run(argv + ["--no-progress"] + (["--out", str(tmp_path / "cmp")] if argv[0] == "compare" else
                                                      []), capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "cmp").exists() and "test MSE" not in out


def test_compare_out_that_is_a_file_exits_2(capsys, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, out, err = _run(["compare", "--task", "inertia", "--models", "mlp", *TINY, "--out", str(target)], capsys)
    assert code == 2 and "not a directory" in err  # was FileExistsError with a traceback
    assert target.read_text() == "mine"


def test_compare_table_json_and_plot(capsys, tmp_path):
    out_dir = tmp_path / "cmp"
    code, out, err = _run(["compare", "--task", "mixed-inertia:o2z", "--models", "mlp,emlp:O(2)@z,soft", "--seeds", "2",
                           *TINY, "--out", str(out_dir)], capsys)
    assert code == 0, err
    data = json.loads((out_dir / "compare.json").read_text())
    assert (out_dir / "compare.png").stat().st_size > 1000
    assert data["models"] == ["mlp", "emlp:O(2)@z", "soft"] and data["seeds"] == 2
    assert len(data["runs"]) == 6
    summary = data["summary"]
    for name in data["models"]:
        mses = [r["test_mse"] for r in data["runs"] if r["model"] == name]
        assert summary[name]["test_mse"] == sorted(mses, key=mses.index)
        assert summary[name]["test_mse_mean"] == pytest.approx(sum(mses) / 2)
        assert summary[name]["n_parameters"] > 0 and summary[name]["step_seconds"] > 0
        # the per-run line printed while training shows the same numbers
        for r in data["runs"]:
            if r["model"] == name:
                assert f"{name:<14} seed {r['seed']}: test MSE {r['test_mse']:.4e}" in out
    per4 = {"O(3)", "O(2)@x", "O(2)@y", "O(2)@z"}
    assert summary["soft"]["strengths"] and set(summary["soft"]["strengths"]) == per4 | {f"Skeleton({c})" for c in per4}
    assert summary["emlp:O(2)@z"]["equivariance"]["O(2)@z"] < 1e-10
    assert "±" in out and "soft beats" not in out  # table printed; the "beats" verdict needs >= 3 seeds
    for name in data["models"]:
        assert f"{summary[name]['test_mse_mean']:.4g}" in out
    # running again reuses the finished runs (same numbers, no retraining)
    code, out2, err = _run(["compare", "--task", "mixed-inertia:o2z", "--models", "mlp,emlp:O(2)@z,soft", "--seeds",
                            "2", *TINY, "--out", str(out_dir)], capsys)
    assert code == 0
    again = json.loads((out_dir / "compare.json").read_text())
    assert [r["test_mse"] for r in again["runs"]] == [r["test_mse"] for r in data["runs"]]


def test_candidates_option_reaches_the_soft_model_and_the_tables(capsys, tmp_path):
    """--candidates replaces the task's candidate list of the soft models; its extra groups get an equivariance
    column and a strength; absent strengths print '-'."""
    code, out, err = _run(["compare", "--task", "mixed-inertia:none", "--models", "mlp,soft", "--seeds", "1",
                           "--candidates", "O(3); O(2)@z ;Signs(3)", "--out", str(tmp_path / "cmp"), *TINY], capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    soft = next(r for r in saved["runs"] if r["model"] == "soft")
    # + the skeleton of O(2)@z; Skeleton(O(3)) has the elements of Signs(3), already listed
    assert list(soft["strengths"]) == ["O(3)", "O(2)@z", "Signs(3)", "Skeleton(O(2)@z)"]
    assert "Signs(3)" in soft["equivariance"] and "O(2)@x" in soft["equivariance"]
    assert "Signs(3)" in out
    # one row per group: every candidate name printed whole (columns are models, not groups)
    assert all(re.search(rf"^│ {re.escape(g)} +│", out, re.M) for g in soft["strengths"]), out
    code, out, err = _run(["fit", "--task", "mixed-inertia:none", "--model", "soft", "--candidates", "O(3);O(3)",
                           *TINY], capsys)
    assert code == 2 and "twice" in (out + err) and "Traceback" not in (out + err)
    code, out, err = _run(["fit", "--task", "mixed-inertia:none", "--model", "soft", "--candidates", " ; ", *TINY],
                          capsys)
    assert code == 2 and "--candidates is empty" in (out + err)


def test_skeletons_switch(capsys, tmp_path):
    """--no-skeletons keeps exactly the listed candidates; --skeletons reaches per in compare but not mlp; on a
    model without candidates fit refuses it (exit 2, no traceback)."""
    code, out, err = _run(["fit", "--task", "mixed-inertia:o2z", "--model", "soft", "--no-skeletons", "--json",
                           *TINY], capsys)
    assert code == 0, err
    assert list(json.loads(out)["strengths"]) == ["O(3)", "O(2)@x", "O(2)@y", "O(2)@z"]
    code, out, err = _run(["compare", "--task", "mixed-inertia:o2z", "--models", "mlp,per", "--seeds", "1",
                           "--skeletons", "--out", str(tmp_path / "cmp"), *TINY], capsys)
    assert code == 0, err
    per = next(r for r in json.loads((tmp_path / "cmp" / "compare.json").read_text())["runs"] if r["model"] == "per")
    assert len(per["strengths"]) == 8 and list(per["strengths"])[-1] == "Skeleton(O(2)@z)"
    code, out, err = _run(["fit", "--task", "mixed-inertia:o2z", "--model", "mlp", "--skeletons", *TINY], capsys)
    assert code == 2 and "only the soft models" in (out + err) and "Traceback" not in (out + err)
