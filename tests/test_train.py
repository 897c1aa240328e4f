"""Model factory and Trainer: normalisation wrapper, errors, run directories, checkpoints and exact resume."""
import json

import pytest
import torch

from softsym.data import make_task
from softsym.errors import ConfigError, DataError, RepError, SoftsymError
from softsym.models import MODEL_NAMES, Standardized, build_model
from softsym.train import TrainConfig, Trainer, default_config, load_checkpoint


@pytest.fixture(scope="module")
def o2z():
    return make_task("mixed-inertia:o2z", n_train=40, n_val=20, n_test=20, seed=0)


@pytest.fixture(scope="module")
def o5():
    return make_task("o5synthetic", n_train=40, n_val=20, n_test=20, seed=0)


def _cfg(**kw):
    base = dict(lr=3e-3, epochs=4, batch_size=16, seed=0, progress=False, equivariance_samples=2,
                equivariance_points=8)
    base.update(kw)
    return TrainConfig(**base)


# ---------------------------------------------------------------------------- factory
def test_unknown_model_lists_valid_names(o2z):
    with pytest.raises(ConfigError) as exc:
        build_model("transformer", o2z)
    for name in ("mlp", "emlp", "emlp:<group>", "rpp", "per", "soft"):
        assert name in str(exc.value)
    assert set(MODEL_NAMES) == {"mlp", "emlp", "emlp:<group>", "rpp", "per", "soft"}


def test_rep_mismatch_is_a_softsym_error(o2z):
    with pytest.raises(RepError, match="O\\(5\\)"):
        build_model("emlp:O(5)", o2z, ch=8)
    with pytest.raises(SoftsymError):
        build_model("emlp:O(2)@q", o2z, ch=8)
    with pytest.raises(ConfigError):
        build_model("soft", o2z, ch=0)
    with pytest.raises(ConfigError):
        build_model("mlp", "inertia")


def test_standardized_wrapper_returns_raw_scale(o5):
    model = build_model("mlp", o5, ch=8, num_layers=1, dtype=torch.float64)
    assert isinstance(model, Standardized) and model.tuner_name is None
    x = o5.x_test[:5]
    expected = model.net(x / o5.x_scale) * o5.y_std + o5.y_mean
    assert torch.allclose(model(x), expected)
    assert model.build_seconds > 0 and model.n_parameters == sum(p.numel() for p in model.parameters())
    assert float(model.regularization()) == 0.0
    assert not hasattr(model, "symmetry")


def test_standardized_wrapper_refuses_wrong_input_shapes(o5):
    """x / x_scale broadcast (n, 1) and 0-d inputs to full-width inputs and returned predictions for them."""
    model = build_model("mlp", o5, ch=8, num_layers=1)
    for shape in [(5, 1), (), (5, 9)]:
        with pytest.raises(RepError, match=f"last dimension 10 .*got shape {tuple(shape)}".replace("(", "\\(")
                           .replace(")", "\\)")):
            model(torch.ones(shape))
    assert model(o5.x_test[:3].reshape(1, 3, 10)).shape == (1, 3, 1)


def test_build_model_refuses_bad_seeds(o5):
    for seed in (-1, 1.5, True):  # mlp accepted a negative seed (and recorded it in the spec)
        with pytest.raises(ConfigError, match="seed"):
            build_model("mlp", o5, ch=8, num_layers=1, seed=seed)


def test_models_build_with_defaults_and_tuners(o2z):
    soft = build_model("soft", o2z, ch=8, num_layers=1)
    per = build_model("per", o2z, ch=8, num_layers=1)
    oracle = build_model("emlp:O(2)@z", o2z, ch=8, num_layers=1)
    assert soft.tuner_name == "soft" and per.tuner_name == "per" and oracle.tuner_name is None
    per4 = ["O(3)", "O(2)@x", "O(2)@y", "O(2)@z"]
    assert soft.symmetry.names == per4 + [f"Skeleton({c})" for c in per4]  # soft adds the finite skeletons
    assert soft.residuals().shape == (8,) and per.symmetry.names == per4  # per keeps PER's list
    assert oracle.model_name == "emlp:O(2)@z" and oracle.spec["ch"] == 8
    a, b = build_model("mlp", o2z, ch=8, seed=3), build_model("mlp", o2z, ch=8, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_default_config_protocols(o2z):
    inertia = make_task("inertia", n_train=1000, n_val=2, n_test=2)
    c = default_config(inertia, "emlp")
    assert (c.lr, c.batch_size, c.epochs, c.weight_decay, c.schedule) == (3e-3, 500, 900, 0.0, "constant")
    assert default_config(inertia, "mlp", n_train=100).epochs == 1000
    p = default_config(o2z, "soft")
    assert (p.lr, p.epochs, p.batch_size, p.weight_decay, p.schedule) == (1e-3, 8000, 500, 2e-4, "cosine")
    assert default_config(inertia, "emlp", schedule="cosine").schedule == "cosine"
    assert default_config(o2z, "mlp").weight_decay == 0.0
    assert default_config(o2z, "soft", epochs=3).epochs == 3


def test_config_validation():
    with pytest.raises(ConfigError):
        TrainConfig(epochs=0).validate()
    with pytest.raises(ConfigError):
        TrainConfig(schedule="step").validate()
    TrainConfig(world_size=2).validate()  # data parallelism over local processes
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError):
            TrainConfig(world_size=bad).validate()
    with pytest.raises(ConfigError):
        TrainConfig(resume=True, overwrite=True).validate()


@pytest.mark.parametrize("bad", [
    dict(lr=True), dict(weight_decay=float("inf")), dict(min_lr=-1.0), dict(min_lr=1.0), dict(min_lr=float("nan")),
    dict(seed=-1), dict(seed=1.5), dict(seed="0"), dict(select_after=-3), dict(select_after=1.5),
    dict(checkpoint_every=-1), dict(resume=True),  # resume without a run directory was silently a fresh run
])
def test_config_validation_of_every_numeric_field(bad):
    # these were accepted: inf weight decay / NaN min_lr trained to NaN, bad seeds raised numpy errors in fit()
    field = next(iter(bad))
    with pytest.raises(ConfigError, match="run directory" if field == "resume" else field):
        TrainConfig(**bad).validate()
    TrainConfig(min_lr=3e-3, select_after=0, checkpoint_every=0, seed=0).validate()  # the edges are fine


# ---------------------------------------------------------------------------- training and evaluation
def test_fit_metrics_and_exact_equivariance_in_float64(o2z):
    model = build_model("emlp", o2z, ch=8, num_layers=1)
    res = Trainer(model, o2z, _cfg(epochs=3)).fit()
    m = res.metrics
    assert m["finished"] and m["steps"] == 9 and len(res.log) == 3
    assert m["test_mse"] > 0 and m["best_epoch"] in (1, 2, 3)
    assert set(m["equivariance"]) == {"O(3)", "O(2)@x", "O(2)@y", "O(2)@z"}
    assert all(v["mean"] < 1e-10 for v in m["equivariance"].values())  # exact O(3) model, float64 actions
    mlp = Trainer(build_model("mlp", o2z, ch=8, num_layers=1), o2z, _cfg(epochs=1)).fit().metrics
    assert mlp["equivariance"]["O(3)"]["mean"] > 1e-4
    # the reported test MSE is the float64 MSE of the returned (best) model on raw targets
    with torch.no_grad():
        pred = res.model.double()(o2z.x_test)
    assert abs(float(((pred - o2z.y_test) ** 2).mean()) - m["test_mse"]) < 1e-5 * m["test_mse"]


def test_select_last_and_best(o2z):
    res = Trainer(build_model("mlp", o2z, ch=8, num_layers=1), o2z, _cfg(epochs=3, select="last")).fit()
    assert res.metrics["best_epoch"] is None
    res = Trainer(build_model("mlp", o2z, ch=8, num_layers=1), o2z, _cfg(epochs=5, select_after=3)).fit()
    assert res.metrics["best_epoch"] in (4, 5)


def _soft_trainer(task, run_dir, **kw):
    model = build_model("soft", task, ch=8, num_layers=1, seed=1)
    return Trainer(model, task, _cfg(run_dir=str(run_dir), tuner_options={"every": 2}, **kw))


def test_interrupted_and_resumed_run_matches_uninterrupted(o2z, tmp_path):
    full = _soft_trainer(o2z, tmp_path / "full", epochs=6).fit()
    part = _soft_trainer(o2z, tmp_path / "split", epochs=6, stop_after=3).fit()
    assert not part.finished and part.metrics["epoch"] == 3
    assert not (tmp_path / "split" / "metrics.json").exists()
    resumed = _soft_trainer(o2z, tmp_path / "split", epochs=6, resume=True).fit()
    assert resumed.finished
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    last_full = load_checkpoint(tmp_path / "full" / "last.pt")
    last_split = load_checkpoint(tmp_path / "split" / "last.pt")
    for k in last_full["model"]:
        assert torch.equal(last_full["model"][k], last_split["model"][k]), k
    assert full.metrics["test_mse"] == resumed.metrics["test_mse"]
    assert full.metrics["strengths"] == resumed.metrics["strengths"]
    assert [h["strengths"] for h in full.history] == [h["strengths"] for h in resumed.history]
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2, 3, 4, 5, 6]


def test_checkpoints_load_with_weights_only(o2z, tmp_path):
    _soft_trainer(o2z, tmp_path / "run", epochs=2).fit()
    for name in ("last.pt", "best.pt"):
        ck = torch.load(tmp_path / "run" / name, weights_only=True)
        assert ck["format"] == "softsym-checkpoint" and "model" in ck
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert {"optimizer", "scheduler", "tuner", "symmetry", "rng", "epoch", "step", "best"} <= set(last)
    assert set(last["rng"]) == {"torch", "numpy", "python", "samplers"}
    assert last["epoch"] == 2 and last["symmetry"]["strengths"].shape == (8,)  # PER's four + their skeletons
    assert last["tuner"]["name"] == "soft"
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["model"]["name"] == "soft" and cfg["tuner"]["name"] == "soft"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["finished"] and metrics["model"] == "soft"


def test_run_directory_is_never_overwritten_silently(o2z, tmp_path):
    run = tmp_path / "run"
    first = _soft_trainer(o2z, run, epochs=2).fit()
    with pytest.raises(ConfigError, match="different config"):
        _soft_trainer(o2z, run, epochs=3).fit()
    with pytest.raises(ConfigError, match="--resume"):
        _soft_trainer(o2z, run, epochs=2).fit()
    again = _soft_trainer(o2z, run, epochs=2, resume=True).fit()  # finished run: reuse its result
    assert again.metrics["test_mse"] == first.metrics["test_mse"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        _soft_trainer(o2z, other, epochs=2).fit()
    assert (other / "notes.txt").read_text() == "mine"
    replaced = _soft_trainer(o2z, run, epochs=3, overwrite=True).fit()
    assert replaced.metrics["epochs"] == 3


def test_plain_models_train_without_tuner(o2z):
    res = Trainer(build_model("rpp", o2z, ch=8, num_layers=1), o2z, _cfg(epochs=2)).fit()
    assert res.metrics["tuner"] is None and "strengths" not in res.metrics
    with pytest.raises(ConfigError, match="soft model"):
        Trainer(build_model("mlp", o2z, ch=8, num_layers=1), o2z, _cfg(epochs=1, tuner="soft")).fit()


def test_broken_run_directories_raise_config_errors(o5, tmp_path):
    def trainer(run, **kw):
        return Trainer(build_model("mlp", o5, ch=8, num_layers=1), o5, _cfg(epochs=2, run_dir=str(run), **kw))

    run = tmp_path / "run"
    trainer(run, stop_after=1).fit()
    for content, match in [({"format": "softsym-checkpoint"}, "missing epoch, step, model"),
                           ([1, 2], "not a complete softsym checkpoint")]:
        torch.save(content, run / "last.pt")  # were KeyError / AttributeError
        with pytest.raises(ConfigError, match=match):
            trainer(run, resume=True).fit()
    (run / "last.pt").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="corrupt, truncated") as exc:
        trainer(run, resume=True).fit()
    assert "weights_only" not in str(exc.value)  # torch's advice to load untrusted pickles is not passed on
    (run / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON"):  # was "a different config (model: '<missing>' ...)"
        trainer(run, resume=True).fit()
    assert (run / "config.json").read_text() == "{not json"
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(ConfigError, match="cannot create run directory"):  # was NotADirectoryError
        trainer(tmp_path / "afile" / "sub").fit()
    assert (tmp_path / "afile").read_text() == "mine"


def test_non_finite_or_empty_task_data_raise_data_errors(o5):
    import dataclasses

    for split, value in [("x_train", float("nan")), ("y_val", float("inf")), ("x_test", float("nan"))]:
        arr = getattr(o5, split).clone()
        arr[0, 0] = value
        bad = dataclasses.replace(o5, **{split: arr})
        # NaN inputs ended in a misleading ModelError after training, inf targets in val_mse = 1e308
        with pytest.raises(DataError, match=f"{split} has 1 NaN or inf"):
            Trainer(build_model("mlp", o5, ch=8, num_layers=1), bad, _cfg(epochs=1)).fit()
    empty = dataclasses.replace(o5, x_val=o5.x_val[:0], y_val=o5.y_val[:0])
    with pytest.raises(DataError, match="val split has 0 inputs"):
        Trainer(build_model("mlp", o5, ch=8, num_layers=1), empty, _cfg(epochs=1)).fit()


def test_first_ctrl_c_saves_a_checkpoint_at_the_epoch_end_and_resume_matches(tmp_path):
    import os
    import signal
    import threading
    import time

    from softsym import Trainer, TrainConfig, build_model, make_task

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is handled by someone else here")

    def run(run_dir, resume=False, interrupt_after=None):
        task = make_task("mixed-inertia:o2z", n_train=400, n_val=50, n_test=50, seed=0)
        model = build_model("soft", task, ch=8, num_layers=1, seed=0)
        cfg = TrainConfig(epochs=20, batch_size=10, lr=1e-3, schedule="cosine", seed=0, run_dir=str(run_dir),
                          resume=resume, progress=False)
        trainer = Trainer(model, task, cfg)
        if interrupt_after is not None:  # once `interrupt_after` epochs are logged, i.e. the loop is running
            def watch():
                log = run_dir / "metrics.jsonl"
                for _ in range(2000):
                    if log.exists() and len(log.read_text().splitlines()) >= interrupt_after:
                        os.kill(os.getpid(), signal.SIGINT)
                        return
                    time.sleep(0.005)

            threading.Thread(target=watch, daemon=True).start()
        return trainer.fit()

    with pytest.raises(KeyboardInterrupt, match="checkpoint saved"):
        run(tmp_path / "a", interrupt_after=3)
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert 0 < rows[-1]["epoch"] < 20 and (tmp_path / "a" / "last.pt").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    resumed = run(tmp_path / "a", resume=True)
    straight = run(tmp_path / "b")
    assert resumed.metrics["steps"] == straight.metrics["steps"] == 20 * 40
    assert resumed.metrics["test_mse"] == straight.metrics["test_mse"]
