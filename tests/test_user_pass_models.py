"""Regressions from a user pass over the models, trainer and `softsym fit` / `softsym compare`."""
import json

import pytest
import torch

from softsym import EMLP, SoftEMLP, Trainer, TrainConfig, build_model, make_task
from softsym.cli import main
from softsym.errors import ConfigError, ModelError
from softsym.models import parse_model_name

TINY = ["--n-train", "24", "--n-val", "12", "--n-test", "12", "--epochs", "2", "--ch", "8", "--num-layers", "1",
        "--batch-size", "12", "--no-progress"]


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


# ------------------------------------------------------------------ models
def test_unknown_device_is_a_config_error():
    # was a bare RuntimeError ("Expected one of cpu, cuda, ...") from torch.device
    with pytest.raises(ConfigError, match="device 'foo'"):
        EMLP("V", "V", "O(3)", ch=8, num_layers=1, device="foo")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_cuda_is_a_config_error():
    # was AssertionError("Torch not compiled with CUDA enabled")
    with pytest.raises(ConfigError, match="device 'cuda'"):
        SoftEMLP("V", "V", ["O(3)"], ch=8, num_layers=1, device="cuda")


def test_meta_and_cpu_devices_still_work():
    m = EMLP("V", "V", "O(3)", ch=8, num_layers=1, device="cpu")
    assert {p.device.type for p in m.parameters()} == {"cpu"}
    meta = EMLP("V", "V", "O(3)", ch=8, num_layers=1, device="meta")
    assert {p.device.type for p in meta.parameters()} == {"meta"}


@pytest.mark.parametrize("bad", [0.5, True, 1.0])
def test_project_rejects_non_integer_candidates(bad):
    m = SoftEMLP("V", "V", ["O(3)", "O(2)@z"], ch=8, num_layers=1, dtype=torch.float64)
    before = m.flat_parameters().detach().clone()
    with pytest.raises(ConfigError, match="integer index or a name"):
        m.project_(bad)  # 0.5 silently projected onto candidate 0, True onto candidate 1
    assert torch.equal(m.flat_parameters().detach(), before)
    m.project_(1)
    res = m.residuals().detach()
    assert float(res[1]) < 1e-28 and float(res[0]) > 1e-3


def test_emlp_colon_without_a_group_is_refused():
    # "emlp:" was silently the task's full-group EMLP
    with pytest.raises(ConfigError, match="names no group"):
        parse_model_name("emlp:")
    assert parse_model_name("emlp") == ("emlp", None)
    assert parse_model_name(" emlp:O(2)@z ") == ("emlp", "O(2)@z")


# ------------------------------------------------------------------ trainer
@pytest.fixture(scope="module")
def task():
    return make_task("inertia", n_train=16, n_val=8, n_test=8, seed=0)


def test_trainer_rejects_wrong_argument_types(task):
    model = build_model("mlp", task, ch=8, num_layers=1)
    with pytest.raises(ConfigError, match="task from softsym.make_task"):
        Trainer(model, "inertia", TrainConfig(epochs=1))  # was AttributeError in fit()
    with pytest.raises(ConfigError, match="torch.nn.Module"):
        Trainer("mlp", task, TrainConfig(epochs=1))  # was AttributeError: 'str' has no 'parameters'
    with pytest.raises(ConfigError, match="TrainConfig"):
        Trainer(model, task, {"epochs": 1})  # was AttributeError: 'dict' has no 'validate'


def test_stop_after_bool_is_refused():
    with pytest.raises(ConfigError, match="stop_after"):
        TrainConfig(epochs=3, stop_after=True).validate()


def test_divergence_is_reported_as_such(task, tmp_path):
    # was, after all epochs: "the model returned NaN or inf ...; check its forward pass" from the final metrics
    model = build_model("emlp", task, ch=8, num_layers=1)
    cfg = TrainConfig(epochs=40, lr=1e6, batch_size=4, run_dir=str(tmp_path / "run"))
    trainer = Trainer(model, task, cfg)
    with pytest.raises(ModelError, match=r"training diverged: the training loss is (nan|inf) in epoch 1 .*lr 1e\+06"):
        trainer.fit()
    assert len(trainer.log) == 0  # stopped in the first epoch, not after 40
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_divergence_exits_2_in_the_cli(capsys):
    code, out, err = _run(["fit", "--task", "inertia", "--model", "emlp", "--n-train", "16", "--n-val", "8",
                           "--n-test", "8", "--epochs", "40", "--ch", "8", "--num-layers", "1", "--batch-size", "4",
                           "--lr", "1e6", "--no-progress"], capsys)
    assert code == 2 and "training diverged" in err and "Traceback" not in err


# ------------------------------------------------------------------ compare
def test_compare_refuses_a_model_listed_twice(capsys, tmp_path):
    # "mlp,MLP" trained once but counted the run twice: n_seeds 2, seeds [0, 0]
    code, out, err = _run(["compare", "--task", "inertia", "--models", "mlp,MLP", "--seeds", "1", *TINY, "--out",
                           str(tmp_path / "cmp")], capsys)
    assert code == 2 and "twice" in err and "Traceback" not in err
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("extra, message", [
    (["--models", "mlp", "--ch", "0"], "ch must be a positive integer"),  # left an empty --out behind
    (["--models", "mlp", "--n-train", "0"], "n_train must be a positive integer"),  # idem
    (["--models", "mlp,emlp:SU(3)"], "complex generators"),  # found after training mlp
])
def test_compare_validates_models_and_sizes_before_training(capsys, tmp_path, extra, message):
    args = ["compare", "--task", "inertia", "--seeds", "1", *TINY, *extra, "--out", str(tmp_path / "cmp")]
    code, out, err = _run(args, capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "cmp").exists() and "test MSE" not in out


@pytest.mark.parametrize("name, content", [("compare.json", '{"my": "notes"}'), ("compare.png", "my picture")])
def test_compare_never_replaces_files_it_did_not_write(capsys, tmp_path, name, content):
    out_dir = tmp_path / "mine"
    out_dir.mkdir()
    (out_dir / name).write_text(content)
    args = ["compare", "--task", "inertia", "--models", "mlp", "--seeds", "1", *TINY, "--out", str(out_dir)]
    code, out, err = _run(args, capsys)
    assert code == 2 and "not written by softsym compare" in err and "--overwrite" in err
    assert (out_dir / name).read_text() == content and not (out_dir / "runs").exists()
    code, out, err = _run(args + ["--overwrite"], capsys)  # asked: replaced
    assert code == 0, err
    assert json.loads((out_dir / "compare.json").read_text())["models"] == ["mlp"]
    # its own output is refreshed without asking (the runs are kept and reused)
    code, out, err = _run(args, capsys)
    assert code == 0, err
