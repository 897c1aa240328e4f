"""`softsym check` (CLI) and softsym.check (Python): verdicts, tables and clean errors with exit code 2."""
from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from softsym.check import check, load_model
from softsym.cli import app
from softsym.errors import ConfigError, DataError, ModelError

FACTORIES = textwrap.dedent(
    """
    import torch

    class Norm(torch.nn.Module):
        def forward(self, x):
            return x * x.norm(dim=1, keepdim=True)

    def good():
        return Norm()

    def good32():
        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.scale = torch.nn.Parameter(torch.ones(1))
            def forward(self, x):
                return self.scale * x * x.norm(dim=1, keepdim=True)
        return M()

    def broken():
        return torch.nn.Linear(3, 3).double()

    def nearly():
        return lambda x: x * x.norm(dim=1, keepdim=True) + 1e-3 * x[:, :1]

    def wrong_shape():
        return lambda x: x[:, :2]

    def nan_model():
        return lambda x: x * float("nan")

    def raises():
        raise RuntimeError("cannot build the model")

    def raises_markup():
        raise RuntimeError("shape [/] mismatch in [bold]layer")
    """
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def factories(tmp_path_factory):
    path = tmp_path_factory.mktemp("factories") / "my_models.py"
    path.write_text(FACTORIES)
    return path


def _run(*args):
    result = CliRunner().invoke(app, ["check", *args])
    text = result.output + (result.stderr if hasattr(result, "stderr") and result.stderr_bytes is not None else "")
    return result, " ".join(text.split())


def _verdicts(out):
    """The verdict cells of the summary table (whitespace-normalised output)."""
    return re.findall(r"│ (exact|approximate|not equivariant) │", out)


def _base(factories, name, *extra):
    return [f"{factories}:{name}", "--group", "O(3)", "--rep-in", "V", "--rep-out", "V", "--n-inputs", "8", *extra]


# ---------------------------------------------------------------- verdict tables
def test_cli_good_model_is_exact(factories):
    result, out = _run(*_base(factories, "good", "--group", "SO(3)", "--group", "S(3)"))
    assert result.exit_code == 0, out
    assert _verdicts(out) == ["exact", "exact", "exact"]
    assert "equivariance per group" in out and "Lie derivative per generator" in out
    assert "1.0e-09" in out  # the threshold is printed


def test_cli_broken_model_is_not_equivariant(factories, tmp_path):
    report_path = tmp_path / "report.json"
    result, out = _run(*_base(factories, "broken", "--json", str(report_path)))
    assert result.exit_code == 0, out
    assert _verdicts(out) == ["not equivariant"]
    data = json.loads(report_path.read_text())
    assert data["results"][0]["verdict"] == "not equivariant" and data["exact_tol"] == 1e-9


def test_cli_thresholds_override(factories):
    result, out = _run(*_base(factories, "nearly"))
    assert result.exit_code == 0 and _verdicts(out) == ["approximate"]  # mean error ~3e-4 <= 0.1
    result, out = _run(*_base(factories, "nearly", "--approx-tol", "1e-5"))
    assert _verdicts(out) == ["not equivariant"] and "1e-05" in out
    result, out = _run(*_base(factories, "nearly", "--exact-tol", "1.0"))
    assert result.exit_code == 0 and _verdicts(out) == ["exact"] and "1.0e+00" in out


def test_cli_float32_threshold(factories):
    result, out = _run(*_base(factories, "good32"))
    assert result.exit_code == 0 and "float32" in out and "1.0e-05" in out and _verdicts(out) == ["exact"]


def test_cli_inputs_npz(factories, tmp_path):
    path = tmp_path / "inputs.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((5, 3)))
    result, out = _run(*_base(factories, "good", "--inputs", str(path)))
    assert result.exit_code == 0 and "inputs.npz" in out and _verdicts(out) == ["exact"]
    bad = tmp_path / "bad.npz"
    np.savez(bad, y=np.zeros((2, 3)))
    result, out = _run(*_base(factories, "good", "--inputs", str(bad)))
    assert result.exit_code == 2 and "no array 'x'" in out


def test_cli_inputs_are_validated_before_the_report(factories, tmp_path):
    npy = tmp_path / "inputs.npy"
    np.save(npy, np.random.default_rng(0).standard_normal((5, 3)))
    result, out = _run(*_base(factories, "good", "--inputs", str(npy)))
    assert result.exit_code == 0 and "(5 rows)" in out and _verdicts(out) == ["exact"]
    one = tmp_path / "one.npz"
    np.savez(one, x=np.ones(3))  # a single input without batch axis: one row, not three
    result, out = _run(*_base(factories, "good", "--inputs", str(one)))
    assert result.exit_code == 0 and "(1 rows)" in out
    for name, arr, message in (("scalar", np.float64(1.0), "shape ()"), ("complex", np.ones((4, 3)) + 1j, "complex")):
        path = tmp_path / f"{name}.npz"
        np.savez(path, x=arr)
        result, out = _run(*_base(factories, "good", "--inputs", str(path)))
        assert result.exit_code == 2 and message in out and "Traceback" not in out


# ---------------------------------------------------------------- clean errors, exit code 2
@pytest.mark.parametrize("spec,message", [
    ("no/such/file.py:make", "does not exist"),
    ("softsym_no_such_module:make", "cannot import module"),
    ("{f}:missing", "has no attribute 'missing'"),
    ("{f}:raises", "cannot build the model"),
    ("{f}:raises_markup", "shape [/] mismatch in [bold]layer"),  # printed verbatim, not as rich markup
    ("{f}:wrong_shape", "rep_out V of O(3) has size 3"),
    ("{f}:nan_model", "NaN"),
    ("nocolon", "must be 'package.module:factory'"),
])
def test_cli_errors_exit_2(factories, spec, message):
    args = _base(factories, "good")
    args[0] = spec.format(f=factories)
    result, out = _run(*args)
    assert result.exit_code == 2, out
    assert "error:" in out and message in out
    assert "Traceback" not in out


def test_cli_bad_group_and_rep_exit_2(factories):
    args = _base(factories, "good")
    args[2] = "Q(3)"
    result, out = _run(*args)
    assert result.exit_code == 2 and "cannot parse group" in out
    args = _base(factories, "good")
    args[4] = "W"
    result, out = _run(*args)
    assert result.exit_code == 2 and "cannot parse rep" in out


def test_console_script_exit_code(factories):
    """The real entry point (python -m softsym) prints the error without a traceback and exits with 2."""
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "softsym", "check", f"{factories}:wrong_shape", "-g", "O(3)",
                           "--rep-in", "V", "--rep-out", "V"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "has size 3" in " ".join(proc.stderr.split())


# ---------------------------------------------------------------- Python API
def test_python_check_report(factories):
    report = check(f"{factories}:good", ["O(3)", "SO(3)", "S(3)"], "V", "V", n_inputs=8)
    assert report.verdicts == {"O(3)": "exact", "SO(3)": "exact", "S(3)": "exact"}
    d = report.to_dict()
    assert d["results"][0]["equivariance"]["max"] < 1e-12 and d["results"][2]["lie"] is None
    assert report["SO(3)"].lie.n_generators == 3
    json.dumps(d)  # serialisable
    broken = check(torch.nn.Linear(3, 3).double(), "O(3)", "V", "V", n_inputs=8)
    assert broken.results[0].verdict == "not equivariant"


def test_python_check_accepts_factory_and_model():
    model = load_model(lambda: torch.nn.Linear(3, 3))
    assert isinstance(model, torch.nn.Linear)
    fn = lambda x: 2 * x  # noqa: E731  (a model, not a factory: it takes an argument)
    assert load_model(fn) is fn
    with pytest.raises(ModelError, match="returned int"):
        load_model(lambda: 3)
    with pytest.raises(DataError):
        check(fn, "O(3)", "V", "V", inputs=np.zeros((4, 2)))


def test_python_check_input_validation():
    fn = lambda x: 2 * x  # noqa: E731
    assert check(fn, "O(3)", "V", "V", inputs=torch.ones(3)).n_inputs == 1
    assert check(fn, "O(3)", "V", "V", n_inputs=np.int64(2)).n_inputs == 2
    with pytest.raises(DataError, match="complex"):  # the imaginary part was silently dropped
        check(fn, "O(3)", "V", "V", inputs=torch.ones(2, 3, dtype=torch.complex128))
    with pytest.raises(DataError, match="shape"):
        check(fn, "O(3)", "V", "V", inputs=[[1.0, 2.0, 3.0], [1.0]])
    with pytest.raises(ConfigError, match="n_inputs"):
        check(fn, "O(3)", "V", "V", n_inputs=True)
