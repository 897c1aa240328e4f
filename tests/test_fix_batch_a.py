"""Regressions of user-pass batch A: SoftEMLP's default full group, candidate collections, tuner options, run-directory
messages, num_layers=0, positional groups, EMLP's task names, compare-previous.*, SIGTERM, sampler labels and the
names of unnamed groups."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import softsym
from softsym.cli import main
from softsym.errors import ConfigError

TINY = ["--n-train", "24", "--n-val", "12", "--n-test", "12", "--epochs", "2", "--ch", "8", "--batch-size", "12",
        "--no-progress"]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture(scope="module")
def inertia():
    return softsym.make_task("inertia", n_train=24, n_val=12, n_test=12, seed=0)


# ---------------------------------------------------------------------------- 1. SoftEMLP's default full group
def test_soft_emlp_default_full_group_contains_every_candidate_and_per_zeroes_it():
    from softsym.nn import SoftEMLP
    from softsym.nn.models import lie_algebra_contains
    from softsym.soft.tuning import PERTuner

    o3, o2z = softsym.group("O(3)"), softsym.group("O(2)@z")
    assert lie_algebra_contains(o3, o2z) and not lie_algebra_contains(o2z, o3)
    assert lie_algebra_contains(o2z, softsym.group("Signs(3)"))  # a finite group's (zero) algebra lies in any

    model = SoftEMLP("5V0+5V", "V**2", ["O(2)@z", "O(2)@x", "O(3)"], ch=8, num_layers=1)
    assert model.full_group == o3  # was the first candidate, O(2)@z
    tuner = PERTuner()
    tuner.attach(model, epochs=8, steps_per_epoch=1)
    assert model.symmetry.strengths.tolist() == [100.0, 100.0, 0.0]  # PER leaves the full group unregularised

    # equal Lie algebras: the larger group (fewer invariants; session 11, was the first); an explicit full_group is kept
    assert SoftEMLP("V", "V", ["SO(3)", "O(3)"], ch=8, num_layers=1).full_group.name == "O(3)"
    explicit = SoftEMLP("V", "V", ["O(2)@z", "O(3)"], ch=8, num_layers=1, full_group="O(2)@z")
    assert explicit.full_group == o2z

    with warnings.catch_warnings():  # all finite: the Lie algebras do not decide, the fewest invariants, silently
        warnings.simplefilter("error")
        assert SoftEMLP("V", "V", ["Signs(3)", "S(3)"], ch=8, num_layers=1).full_group.name == "Signs(3)"
    with pytest.warns(UserWarning, match="O\\(2\\)@x.*pass full_group="):  # none contains the others
        undecided = SoftEMLP("V", "V", ["O(2)@z", "O(2)@x"], ch=8, num_layers=1)
    assert undecided.full_group == o2z


# ---------------------------------------------------------------------------- 2. candidate collections
def test_soft_symmetry_refuses_sets_and_takes_strengths_from_a_dict():
    from softsym.models import build_model
    from softsym.nn import SoftEMLP
    from softsym.soft.symmetry import SoftSymmetry

    for bad in ({"O(3)", "O(2)@z"}, frozenset({"O(3)"})):
        with pytest.raises(ConfigError, match="give a list: the order matters"):
            SoftSymmetry(bad)
    sym = SoftSymmetry({"O(3)": 0.5, "O(2)@z": 2.0})
    assert sym.names == ["O(3)", "O(2)@z"] and sym.strengths.tolist() == [0.5, 2.0]
    with pytest.raises(ConfigError, match="strengths"):
        SoftSymmetry({"O(3)": 0.5}, strengths=[1.0])
    with pytest.raises(ConfigError, match="finite and non-negative"):
        SoftSymmetry({"O(3)": -1.0})
    # str, Group, list and tuple as before
    assert SoftSymmetry("O(3)").strengths.tolist() == [1.0]
    assert SoftSymmetry(softsym.group("O(3)"), 3.0).strengths.tolist() == [3.0]
    assert SoftSymmetry(("O(3)", "O(2)@z"), [1.0, 2.0]).names == ["O(3)", "O(2)@z"]

    model = SoftEMLP("V", "V", {"O(3)": 0.0, "O(2)@z": 7.0}, ch=8, num_layers=1)
    assert model.symmetry.as_dict() == {"O(3)": 0.0, "O(2)@z": 7.0}
    task = softsym.make_task("mixed-inertia:o2z", n_train=8, n_val=4, n_test=4, seed=0)
    with pytest.raises(ConfigError, match="give a list"):
        build_model("per", task, ch=8, num_layers=1, candidates={"O(3)", "O(2)@z"})


# ---------------------------------------------------------------------------- 3. candidates= alias
def test_soft_emlp_accepts_candidates_keyword():
    from softsym.nn import SoftEMLP

    model = SoftEMLP("V", "V", candidates=["O(3)", "O(2)@z"], ch=8, num_layers=1)
    assert model.symmetry.names == ["O(3)", "O(2)@z"] and model.full_group.name == "O(3)"
    with pytest.raises(ConfigError, match="both groups= and candidates="):
        SoftEMLP("V", "V", ["O(3)"], candidates=["O(3)"], ch=8)
    with pytest.raises(ConfigError, match="candidate groups must be given"):
        SoftEMLP("V", "V", ch=8)


# ---------------------------------------------------------------------------- 4. SoftTuner options
@pytest.mark.parametrize("option, value", [
    ("init", "1"), ("group_samples", "a"), ("group_samples", True), ("group_samples", 1.5), ("every", "3"),
    ("lr", "0.1"), ("accept", "1"), ("reject", None), ("warmup", "0.1"), ("window", [0.2]), ("lo", "x"),
    ("hi", float("inf")), ("max_val", 1), ("seed", -1), ("record_every", 0), ("restart", "no"),
])
def test_soft_tuner_options_raise_config_error(option, value):
    from softsym.soft.tuning import SoftTuner

    with pytest.raises(ConfigError, match=f"SoftTuner {option} must be .*got {re.escape(repr(value))}$"):
        SoftTuner(**{option: value})


def test_soft_tuner_options_through_the_trainer_and_per_shares_the_checks(inertia):
    from softsym.models import build_model
    from softsym.soft.tuning import PERTuner

    model = build_model("mlp", inertia, ch=8, num_layers=0)
    with pytest.raises(ConfigError, match="SoftTuner group_samples must be an integer >= 1, got 'a'"):
        softsym.Trainer(model, inertia, softsym.TrainConfig(tuner="soft", tuner_options={"group_samples": "a"}))
    with pytest.raises(ConfigError, match="lambda_init must be finite and >= 0, got '1'"):
        PERTuner(lambda_init="1")
    with pytest.raises(ConfigError, match="adjust_at must be a positive integer"):
        PERTuner(adjust_at=2.0)


# ---------------------------------------------------------------------------- 5. run-directory messages
def test_trainer_run_dir_errors_name_python_and_cli_spellings(inertia, tmp_path):
    from softsym.models import build_model

    def trainer(run_dir, **kw):
        cfg = softsym.TrainConfig(epochs=1, batch_size=12, run_dir=str(run_dir), progress=False, **kw)
        return softsym.Trainer(build_model("mlp", inertia, ch=8, num_layers=0), inertia, cfg)

    trainer(tmp_path / "run").fit()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the SIGTERM handler is gone after fit
    with pytest.raises(ConfigError) as exc:
        trainer(tmp_path / "run").fit()
    assert "resume=True (--resume)" in str(exc.value) and "overwrite=True (--overwrite)" in str(exc.value)
    with pytest.raises(ConfigError, match=r"different config.*overwrite=True \(--overwrite\)"):
        trainer(tmp_path / "run", lr=1e-2).fit()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds no softsym run.*overwrite=True \(--overwrite\)"):
        trainer(tmp_path / "other").fit()


# ---------------------------------------------------------------------------- 6. num_layers = 0, bool ch
def test_build_model_accepts_zero_layers_and_refuses_bools(inertia):
    from softsym.models import build_model

    x = inertia.x_test[:3].float()
    for name in ("mlp", "emlp", "rpp", "soft"):
        model = build_model(name, inertia, ch=8, num_layers=0)
        assert model.spec["num_layers"] == 0 and model(x).shape == (3, 9)
    for kw, what in (({"ch": True}, "ch must be a positive integer"),
                     ({"num_layers": True}, "num_layers must be a non-negative integer"),
                     ({"num_layers": -1}, "num_layers must be a non-negative integer")):
        with pytest.raises(ConfigError, match=what):
            build_model("mlp", inertia, **kw)


def test_fit_cli_trains_with_zero_layers(capsys, tmp_path):
    code, out, err = _run(["fit", "--task", "inertia", "--model", "emlp", *TINY, "--num-layers", "0",
                           "--run-dir", str(tmp_path / "run")], capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["model"]["num_layers"] == 0 and saved["steps"] == 4 and np.isfinite(saved["test_mse"])
    assert saved["equivariance"]["O(3)"]["mean"] < 1e-10


# ---------------------------------------------------------------------------- 7. positional group
def test_equivariant_linear_takes_the_group_third():
    from softsym.nn import EquivariantLinear, RPPLinear

    positional = EquivariantLinear("2V", "V", "O(3)", bias=False)
    keyword = EquivariantLinear("2V", "V", group="O(3)", bias=False)
    assert positional.group.name == "O(3)" and positional.weight_dim == keyword.weight_dim == 2
    assert EquivariantLinear("V", "V", "O(3)").weight_dim == 1
    assert RPPLinear("V", "V", "O(3)").equivariant.weight_dim == 1
    with pytest.raises(ConfigError, match="bias=False"):
        EquivariantLinear("V", "V", False)


# ---------------------------------------------------------------------------- 8. EMLP's task names
def test_make_task_accepts_emlp_class_names():
    from softsym.data.synthetic import target_function

    for name, key in (("ParticleInteraction", "particle-interaction"), ("O5Synthetic", "o5synthetic"),
                      ("Inertia", "inertia"), ("particle_interaction", "particle-interaction"),
                      ("MixedInertia:o2z", "mixed-inertia:o2z")):
        assert softsym.make_task(name, n_train=4, n_val=2, n_test=2).name == key
    assert target_function("ParticleInteraction")(np.zeros((1, 16))).shape == (1, 1)
    with pytest.raises(ConfigError) as exc:
        softsym.make_task("ParticleDynamics")
    assert "unknown task 'ParticleDynamics'" in str(exc.value)
    assert all(t in str(exc.value) for t in softsym.TASKS)


# ---------------------------------------------------------------------------- 9. compare-previous.*
def test_compare_keeps_a_different_previous_comparison(capsys, tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    larger = {"task": "inertia", "models": ["mlp", "emlp"], "seeds": 3, "n_train": 24, "summary": {}, "runs": []}
    (out / "compare.json").write_text(json.dumps(larger))
    (out / "compare.png").write_bytes(b"larger plot")
    (out / "compare-previous.json").write_text("{}")  # an older -previous is replaced
    (out / "compare-previous.png").write_bytes(b"older plot")
    args = ["compare", "--task", "inertia", "--models", "mlp", "--seeds", "1", *TINY, "--out", str(out)]
    code, printed, err = _run(args, capsys)
    assert code == 0, err
    assert json.loads((out / "compare-previous.json").read_text()) == larger
    assert (out / "compare-previous.png").read_bytes() == b"larger plot"
    assert json.loads((out / "compare.json").read_text())["models"] == ["mlp"]
    lines = [ln for ln in printed.splitlines() if "compare-previous.json" in ln]
    assert len(lines) == 1 and "mlp,emlp" in lines[0] and "3 seed(s)" in lines[0]
    # the same comparison again: replaced in place, the kept one stays
    code, printed, err = _run(args, capsys)
    assert code == 0, err
    assert "compare-previous" not in printed
    assert json.loads((out / "compare-previous.json").read_text()) == larger


# ---------------------------------------------------------------------------- 10. SIGTERM
_SIGTERM_CHILD = textwrap.dedent("""
    import sys
    import torch
    torch.set_num_threads(1)
    from softsym import Trainer, TrainConfig, build_model, make_task

    run_dir, resume = sys.argv[1], sys.argv[2] == "1"
    task = make_task("inertia", n_train=400, n_val=50, n_test=50, seed=0)
    model = build_model("mlp", task, ch=16, num_layers=1, seed=0)
    cfg = TrainConfig(epochs=60, batch_size=10, lr=1e-3, schedule="cosine", seed=0, run_dir=run_dir, resume=resume,
                      progress=False)
    try:
        result = Trainer(model, task, cfg).fit()
    except KeyboardInterrupt as exc:
        print("INTERRUPTED", exc, flush=True)
        sys.exit(3)
    print("DONE", repr(result.metrics["test_mse"]), result.metrics["steps"], flush=True)
""")


def test_sigterm_saves_a_checkpoint_and_resume_matches(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_SIGTERM_CHILD)
    env = dict(os.environ, PYTHONPATH=str(Path(softsym.__file__).parents[1]))

    def child(run_dir, resume=False, **kw):
        return subprocess.Popen([sys.executable, str(script), str(run_dir), "1" if resume else "0"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)

    run = tmp_path / "a"
    proc = child(run)
    log = run / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (proc.returncode, out, err)  # killed outright (-15) before the fix
    assert "checkpoint saved" in out and "SIGTERM" in err
    epochs = len(log.read_text().splitlines())
    assert 0 < epochs < 60 and (run / "last.pt").exists()

    resumed, straight = child(run, resume=True), child(tmp_path / "b")
    r_out, r_err = resumed.communicate(timeout=120)
    s_out, s_err = straight.communicate(timeout=120)
    assert resumed.returncode == 0 and straight.returncode == 0, (r_err, s_err)
    assert r_out.split()[:3] == s_out.split()[:3] and r_out.split()[2] == str(60 * 40)


# ---------------------------------------------------------------------------- 11. sampler labels
def test_group_elements_label_says_which_sampler_ran():
    from softsym.metrics import group_elements

    def label(group, **kw):
        return group_elements(group, 4, **kw)[3]

    heis = np.zeros((3, 3, 3))
    heis[0, 0, 1] = heis[1, 1, 2] = heis[2, 0, 2] = 1.0  # Heisenberg algebra: nilpotent, not compact
    heisenberg = softsym.Group(lie_algebra=heis)
    assert label(heisenberg) == "exp of random Lie-algebra elements (spread 0.5: coefficients ~ N(0, 0.5^2))"
    assert label(heisenberg, spread=0.25) == ("exp of random Lie-algebra elements (spread 0.25: coefficients ~ "
                                              "N(0, 0.25^2))")
    custom_so3 = softsym.Group(lie_algebra=softsym.group("SO(3)").lie_algebra)
    assert label(custom_so3) == "exp of random Lie-algebra elements (coefficients ~ N(0, pi^2); approximately Haar)"
    custom_o3 = softsym.Group(lie_algebra=softsym.group("SO(3)").lie_algebra, discrete_generators=-np.eye(3)[None])
    assert "random words" in label(custom_o3) and "approximately Haar" in label(custom_o3)
    assert label("O(3)") == label("O(2)@z") == "Haar"
    assert label("SL(3)") == "polar decomposition K exp(S), spread 0.5"
    assert label("SO+(1,3)").startswith("polar decomposition: boost")
    assert label("D(4)", exhaustive=False) == "uniform over 8 elements"


# ---------------------------------------------------------------------------- 12. unnamed groups
def test_unnamed_groups_get_distinct_stable_names():
    from softsym.groups import finite

    cyc, swap = finite.PermutationGroup([[1, 2, 0]]), finite.PermutationGroup([[1, 0, 2], [0, 2, 1]])
    assert cyc.name == "PermutationGroup(n=3, (0 1 2))" and swap.name == "PermutationGroup(n=3, (0 1), (1 2))"
    big = finite.PermutationGroup([list(range(1, 40)) + [0], [1, 0] + list(range(2, 40))])
    assert big.name == f"PermutationGroup(n=40, generators=2, key={big.key[:8]})"
    flips = [finite.FiniteGroup(np.diag(v)[None]) for v in ([-1.0, 1, 1], [1.0, -1, 1])]
    assert flips[0].name != flips[1].name
    assert flips[0].name == finite.FiniteGroup(np.diag([-1.0, 1, 1])[None]).name  # stable: from the generators
    assert softsym.Group(lie_algebra=softsym.group("SO(3)").lie_algebra).name.startswith("Group(d=3, lie=3, ")

    report = softsym.check(torch.nn.Linear(3, 3), [flips[0], flips[1], cyc], "V", "V", n_inputs=8, lie=False)
    assert len(report.verdicts) == 3  # two FiniteGroups used to collide as "Group(d=3, lie=0, discrete=1)"
    assert report[flips[1].name].group == flips[1].name
