"""User data as tasks: softsym.task_from_arrays / load_task (NPZ, CSV) and `softsym fit|compare --data`."""
import json

import numpy as np
import pytest
import torch

import softsym
from softsym import Trainer, TrainConfig, build_model, load_task, task_from_arrays
from softsym.cli import main
from softsym.errors import ConfigError, DataError, GroupError, SoftsymError
from softsym.metrics import equivariance_error


def _vector_data(n=60, seed=0):
    """x = (s, a, b) in V0 + 2V of O(3) at different scales; y = (|a|^2 + s, (a.b) a) in V0 + V: O(3)-equivariant."""
    rng = np.random.default_rng(seed)
    s = 3.0 + 0.5 * rng.standard_normal((n, 1))
    a, b = 2.0 * rng.standard_normal((n, 3)), 0.1 * rng.standard_normal((n, 3))
    x = np.concatenate([s, a, b], 1)
    y = np.concatenate([(a ** 2).sum(1, keepdims=True) + s, (a * b).sum(1, keepdims=True) * a], 1)
    return x, y


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


# ------------------------------------------------------------------ arrays
def test_split_sizes_and_seeded_permutation():
    x, y = _vector_data(100)
    t = task_from_arrays(x, y, group="O(3)", rep_in="V0+2V", rep_out="V0+V")
    assert (len(t.x_train), len(t.x_val), len(t.x_test)) == (70, 15, 15)
    assert t.x_train.dtype == torch.float64 and t.y_test.shape == (15, 4)
    rows = {tuple(r) for part in (t.x_train, t.x_val, t.x_test) for r in part.numpy().round(12)}
    assert len(rows) == 100  # a partition of the samples
    again = task_from_arrays(x, y, group="O(3)", rep_in="V0+2V", rep_out="V0+V")
    assert torch.equal(again.x_test, t.x_test)
    other = task_from_arrays(x, y, group="O(3)", rep_in="V0+2V", rep_out="V0+V", seed=1)
    assert not torch.equal(other.x_test, t.x_test)
    sized = task_from_arrays(x, y, group="O(3)", rep_in="V0+2V", rep_out="V0+V", n_train=10, n_val=5, n_test=7)
    assert (len(sized.x_train), len(sized.x_val), len(sized.x_test)) == (10, 5, 7)
    assert t.group == "O(3)" and t.candidates == ("O(3)",) and t.true_groups == ()


def test_normalisation_is_one_scale_per_copy_and_shifts_only_scalars():
    x, y = _vector_data(200)
    t = task_from_arrays(x, y, group="o(3)", rep_in="V0+2V", rep_out="V0+V", n_val=20, n_test=20)
    assert t.group == "O(3)"  # canonical name
    xs = t.x_scale.numpy()
    tr = t.x_train.numpy()
    assert xs[0] == pytest.approx(np.sqrt(np.mean(tr[:, 0] ** 2)))
    assert np.allclose(xs[1:4], np.sqrt(np.mean(tr[:, 1:4] ** 2))) and np.ptp(xs[1:4]) == 0
    assert np.allclose(xs[4:7], np.sqrt(np.mean(tr[:, 4:7] ** 2))) and xs[4] < 0.2 * xs[1]
    ym, ysd = t.y_mean.numpy(), t.y_std.numpy()
    assert ym[0] == pytest.approx(t.y_train[:, 0].mean().item()) and ym[0] > 5
    assert np.all(ym[1:] == 0)  # a vector output is never shifted (that would break equivariance)
    assert ysd[0] == pytest.approx(t.y_train[:, 0].std(unbiased=False).item())
    assert np.ptp(ysd[1:]) == 0
    raw = task_from_arrays(x, y, group="O(3)", rep_in="V0+2V", rep_out="V0+V", normalise=False)
    assert torch.all(raw.x_scale == 1) and torch.all(raw.y_mean == 0) and torch.all(raw.y_std == 1)


def test_exact_model_on_user_data_stays_equivariant_after_normalisation():
    x, y = _vector_data(80)
    t = task_from_arrays(x, y, group="O(3)", rep_in="V0+2V", rep_out="V0+V")
    m = build_model("emlp", t, ch=16, num_layers=1, dtype=torch.float64)
    r = equivariance_error(m, "O(3)", "V0+2V", "V0+V", t.x_test, 8)
    assert r.max < 1e-12
    res = Trainer(m, t, TrainConfig(epochs=3, batch_size=32, lr=3e-3, progress=False)).fit()
    assert res.metrics["equivariance"]["O(3)"]["max"] < 1e-10
    assert np.isfinite(res.metrics["test_mse"])


def test_scalar_target_may_be_one_dimensional_and_splits_may_be_given():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 10))
    y = np.linalg.norm(x[:, :5], axis=1) - np.linalg.norm(x[:, 5:], axis=1)
    xv, yv = x[:4], y[:4]
    t = task_from_arrays(x, y, group="O(5)", rep_in="2V", rep_out="V0", x_val=xv, y_val=yv)
    assert t.y_train.shape[1] == 1 and torch.equal(t.x_val, torch.from_numpy(xv))
    assert (len(t.x_train), len(t.x_val), len(t.x_test)) == (26, 4, 4)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(x=np.zeros((10, 6)), y=np.zeros((10, 4))), DataError, "has 6 columns but rep_in V0\\+2V has size 7"),
    (dict(x=np.zeros((10, 7)), y=np.zeros((9, 4))), DataError, "x has 10 samples but y has 9"),
    (dict(x=np.zeros((0, 7)), y=np.zeros((0, 4))), DataError, "no samples"),
    (dict(x=np.full((10, 7), np.nan), y=np.zeros((10, 4))), DataError, "70 NaN / inf entries in 10 rows"),
    (dict(x=np.zeros((10, 7)), y=np.zeros((10, 4)), n_train=9, n_val=1, n_test=1), DataError, "cannot split 10"),
    (dict(x=np.zeros((10, 7)), y=np.zeros((10, 4)), group="O(7)"), DataError, "rep_in V0\\+2V has size 15"),
    (dict(x=np.zeros((10, 7)), y=np.zeros((10, 4)), group="Q(3)"), GroupError, "Q\\(3\\)"),
    (dict(x=np.zeros((10, 7)), y=np.zeros((10, 4)), x_val=np.zeros((2, 7))), DataError, "both x_val and y_val"),
    (dict(x=np.zeros((10, 7)), y=np.zeros((10, 4)), n_val=0), ConfigError, "n_val must be a positive integer"),
    (dict(x=[["a"] * 7] * 3, y=np.zeros((3, 4))), DataError, "x is not numeric"),
])
def test_bad_arrays_give_clear_errors(kwargs, exc, match):
    args = dict(group="O(3)", rep_in="V0+2V", rep_out="V0+V")
    args.update(kwargs)
    x, y = args.pop("x"), args.pop("y")
    with pytest.raises(exc, match=match):
        task_from_arrays(x, y, **args)


# ------------------------------------------------------------------ files
def test_npz_and_csv_files_give_the_same_task(tmp_path):
    x, y = _vector_data(50)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    header = ",".join(f"c{i}" for i in range(11))
    np.savetxt(tmp_path / "d.csv", np.concatenate([x, y], 1), delimiter=",", header=header, comments="",
               fmt="%.17g")
    np.savetxt(tmp_path / "d.txt", np.concatenate([x, y], 1), fmt="%.17g")
    kw = dict(group="O(3)", rep_in="V0+2V", rep_out="V0+V", candidates=["O(3)", "O(2)@z"])
    a, b, c = (load_task(tmp_path / f, **kw) for f in ("d.npz", "d.csv", "d.txt"))
    for t in (b, c):
        assert torch.equal(a.x_train, t.x_train) and torch.equal(a.y_test, t.y_test)
    assert a.name == "data:d.npz" and a.candidates == ("O(3)", "O(2)@z")
    assert a.info["source"].endswith("d.npz") and len(a.info["sha256"]) == 16


def test_npz_with_split_arrays(tmp_path):
    x, y = _vector_data(40)
    np.savez(tmp_path / "s.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    t = load_task(tmp_path / "s.npz", group="O(3)", rep_in="V0+2V", rep_out="V0+V")
    assert torch.equal(t.x_test, torch.from_numpy(x[30:]))
    assert len(t.x_val) == round(0.15 * 30) and len(t.x_train) == 30 - len(t.x_val)


@pytest.mark.parametrize("name, content, match", [
    ("missing.npz", None, "does not exist"),
    ("empty.csv", "", "is empty"),
    ("blank.csv", "\n\n  \n", "is empty"),
    ("header.csv", "a,b,c\n", "header but no data rows"),
    ("short.csv", "1,2,3\n", "row 1 has 3 columns, expected 11"),
    ("text.csv", ",".join(["1"] * 10 + ["x"]) + "\n", "row 1 has a non-numeric entry 'x'"),
    ("text2.csv", "a,b\n" + ",".join(["1"] * 11) + "\n" + ",".join(["1"] * 10 + ["x"]) + "\n", "row 2 has a non"),
    ("nan.csv", ",".join(["1"] * 10 + ["nan"]) + "\n" + ",".join(["1"] * 11) + "\n", "NaN / inf"),
    ("data.json", "{}", "unsupported type '.json'"),
    ("bad.npz", "not a zip", "cannot read .* as an .npz archive"),
])
def test_bad_files_give_data_errors(tmp_path, name, content, match):
    p = tmp_path / name
    if content is not None:
        p.write_text(content)
    with pytest.raises(DataError, match=match):
        load_task(p, group="O(3)", rep_in="V0+2V", rep_out="V0+V")


def test_npz_with_unknown_keys(tmp_path):
    np.savez(tmp_path / "k.npz", inputs=np.zeros((3, 7)), targets=np.zeros((3, 4)))
    with pytest.raises(DataError, match="holds arrays \\['inputs', 'targets'\\]; expected 'x' and 'y'"):
        load_task(tmp_path / "k.npz", group="O(3)", rep_in="V0+2V", rep_out="V0+V")


def test_directory_is_refused(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        load_task(tmp_path, group="O(3)", rep_in="V0+2V", rep_out="V0+V")


# ------------------------------------------------------------------ CLI
_TINY = ["--epochs", "2", "--ch", "8", "--num-layers", "1", "--batch-size", "16", "--no-progress"]


def test_cli_fit_on_data(tmp_path, capsys):
    x, y = _vector_data(60)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    code, out, err = _run(["fit", "--data", str(tmp_path / "d.npz"), "--group", "O(3)", "--rep-in", "V0+2V",
                           "--rep-out", "V0+V", "--model", "emlp", "--run-dir", str(tmp_path / "run"), "--json",
                           *_TINY], capsys)
    assert code == 0, err
    m = json.loads(out)
    assert m["task"] == "data:d.npz" and m["equivariance"]["O(3)"]["max"] < 1e-5
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["task"]["info"]["sha256"] == load_task(tmp_path / "d.npz", group="O(3)", rep_in="V0+2V",
                                                      rep_out="V0+V").info["sha256"]


@pytest.mark.parametrize("argv, match", [
    (["fit"], "give either --task NAME"),
    (["fit", "--task", "inertia", "--data", "x.npz"], "not both"),
    (["fit", "--data", "x.npz", "--group", "O(3)"], "--data needs --rep-in, --rep-out"),
    (["fit", "--task", "inertia", "--group", "O(3)"], "--group only apply to --data"),
    (["fit", "--data", "nope.npz", "--group", "O(3)", "--rep-in", "V", "--rep-out", "V"], "does not exist"),
    (["compare", "--data", "nope.csv", "--group", "O(3)", "--rep-in", "V", "--rep-out", "V"], "does not exist"),
])
def test_cli_data_errors_are_clean(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(argv + _TINY, capsys)
    assert code != 0
    assert match in err and "Traceback" not in err + out


def test_cli_compare_on_data(tmp_path, capsys):
    x, y = _vector_data(60)
    np.savetxt(tmp_path / "d.csv", np.concatenate([x, y], 1), delimiter=",")
    code, out, err = _run(["compare", "--data", str(tmp_path / "d.csv"), "--group", "O(3)", "--rep-in", "V0+2V",
                           "--rep-out", "V0+V", "--models", "mlp,emlp", "--seeds", "2", "--out", str(tmp_path / "c"),
                           *_TINY], capsys)
    assert code == 0, err
    payload = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert payload["task"] == "data:d.csv" and payload["n_train"] == 42
    assert set(payload["summary"]) == {"mlp", "emlp"}
    assert payload["summary"]["emlp"]["equivariance"]["O(3)"] < 1e-5


def test_user_data_errors_are_softsym_errors():
    assert issubclass(DataError, SoftsymError)
    with pytest.raises(SoftsymError):
        softsym.task_from_arrays(np.zeros((5, 2)), np.zeros((5, 1)), group="O(3)", rep_in="V", rep_out="V0")
