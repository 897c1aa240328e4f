"""``softsym.check``: is a model equivariant? Sampled and Lie-derivative errors per group, with a verdict.

>>> import torch, softsym
>>> from softsym.check import check
>>> report = check(lambda x: x * x.norm(dim=1, keepdim=True), ["O(3)", "SO(3)"], "V", "V", n_inputs=8)
>>> [r.verdict for r in report.results]
['exact', 'exact']
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, DataError, ModelError, SoftsymError
from .groups.base import Group
from .groups.parse import parse_group
from .metrics import (
    DEFAULT_N_SAMPLES,
    EquivarianceResult,
    _as_inputs,
    check_seed,
    LieDerivativeResult,
    _eval_mode,
    equivariance_error,
    lie_derivative_error,
    model_dtype_device,
)
from .reps.algebra import rep as _make_rep
from .reps.base import Rep
from .wrappers.frames import DegenerateFrameWarning, _FrameBase

__all__ = ["check", "CheckReport", "GroupCheck", "load_model", "exact_tolerance", "VERDICTS", "DEFAULT_APPROX_TOL"]

log = logging.getLogger(__name__)

VERDICTS = ("exact", "approximate", "not equivariant")

#: Mean scale-adjusted error up to which a model counts as approximately equivariant.
DEFAULT_APPROX_TOL: float = 0.1

#: Max error up to which a model counts as exactly equivariant, by the model's dtype (default 1e-5 otherwise).
EXACT_TOL = {torch.float64: 1e-9, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def exact_tolerance(dtype: torch.dtype) -> float:
    """Default 'exact' threshold for a model dtype: 1e-9 (float64), 1e-5 (float32), 1e-2 (half precisions)."""
    return EXACT_TOL.get(dtype, 1e-5)


@dataclass
class GroupCheck:
    """The check of one candidate group.

    max_error = max(equivariance.capped_max, lie.max); mean_error = equivariance.capped_mean (EMLP's
    scale-adjusted error with its floor capped at the output scale, so that a model with small outputs is not
    judged more equivariant than the same model scaled up; see softsym.metrics). verdict: "exact" if
    max_error <= exact_tol, "approximate" if mean_error <= approx_tol, else "not equivariant". ``note`` flags a
    non-exact model whose outputs are as small as round-off (``EquivarianceResult.negligible_output``).
    """

    group: str
    rep_in: str
    rep_out: str
    verdict: str
    max_error: float
    mean_error: float
    equivariance: EquivarianceResult
    lie: Optional[LieDerivativeResult] = None
    note: str = ""

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of this group's result (nested metric results included)."""
        return {
            "group": self.group, "rep_in": self.rep_in, "rep_out": self.rep_out, "verdict": self.verdict,
            "max_error": self.max_error, "mean_error": self.mean_error,
            "equivariance": self.equivariance.to_dict(),
            "lie": self.lie.to_dict() if self.lie is not None else None, "note": self.note,
        }


@dataclass
class CheckReport:
    """Per-group results of :func:`check`, with the settings needed to reproduce them."""

    model: str
    dtype: str
    n_inputs: int
    inputs: str
    seed: int
    n_samples: int
    exact_tol: float
    approx_tol: float
    results: List[GroupCheck] = field(default_factory=list)
    lie: bool = True  #: whether Lie-derivative errors were asked for (a group without them is finite)

    @property
    def verdicts(self) -> Dict[str, str]:
        """{group name: verdict} for a quick look at every group."""
        return {r.group: r.verdict for r in self.results}

    def __getitem__(self, group) -> GroupCheck:
        """The result of one group, by its name, any spec of it ("Lorentz" for "O(1,3)") or the Group itself."""
        for r in self.results:
            if r.group == group:
                return r
        try:
            name = parse_group(group).name
        except SoftsymError:
            name = None
        for r in self.results:
            if name is not None and r.group == name:
                return r
        raise KeyError(f"no result for group {group!r}; have {[r.group for r in self.results]}")

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of the settings and every group's result (``softsym check --json`` writes it)."""
        return {
            "model": self.model, "dtype": self.dtype, "n_inputs": self.n_inputs, "inputs": self.inputs,
            "seed": self.seed, "n_samples": self.n_samples, "exact_tol": self.exact_tol,
            "approx_tol": self.approx_tol, "lie": self.lie, "results": [r.to_dict() for r in self.results],
        }


# ====================================================================== loading models
def _load_attr(spec: str) -> Any:
    if not isinstance(spec, str) or ":" not in spec:
        raise ModelError(f"model spec {spec!r} must be 'package.module:factory' or 'path/to/file.py:factory'")
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ModelError(f"model spec {spec!r} must be 'package.module:factory' or 'path/to/file.py:factory'")
    if not attr.isidentifier() and "." not in attr:
        raise ModelError(f"model spec {spec!r}: {attr!r} is not a Python name; the spec must be "
                         "'package.module:factory' or 'path/to/file.py:factory'")
    is_path = target.endswith(".py") or os.sep in target or "/" in target
    if ":" in target and not (is_path and (len(target) > 1 and target[1] == ":")):  # allow a Windows drive C:
        raise ModelError(f"model spec {spec!r} has more than one ':'; it must be 'package.module:factory' or "
                         "'path/to/file.py:factory' (one ':' before the factory's name)")
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise ModelError(f"cannot load {spec!r}: file {str(path)!r} does not exist")
        name = f"_softsym_check_{abs(hash(str(path.resolve())))}"
        try:
            mspec = importlib.util.spec_from_file_location(name, path)
            if mspec is None or mspec.loader is None:
                raise ImportError("not a Python source file")
            module = importlib.util.module_from_spec(mspec)
            sys.modules[name] = module
            mspec.loader.exec_module(module)
        except SystemExit as exc:
            sys.modules.pop(name, None)
            raise ModelError(_exit_message(f"importing {str(path)!r}", exc)) from None
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ModelError(f"importing {str(path)!r} failed with {type(exc).__name__}: {exc}") from exc
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise ModelError(f"cannot import module {target!r} ({exc}); check the spelling and that it is on "
                             "PYTHONPATH (the current directory is searched), or give a file path "
                             "'path/to/file.py:factory'") from exc
        except SystemExit as exc:
            raise ModelError(_exit_message(f"importing module {target!r}", exc)) from None
        except Exception as exc:
            raise ModelError(f"importing module {target!r} failed with {type(exc).__name__}: {exc}") from exc
    obj, where = module, target
    for part in attr.split("."):  # 'pkg.mod:Zoo.make' -> getattr(getattr(mod, 'Zoo'), 'make')
        if not part.isidentifier() or not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None)))
            raise ModelError(f"{where!r} has no attribute {part!r}; callables there: {', '.join(public) or '(none)'}")
        obj, where = getattr(obj, part), f"{where}:{part}" if where == target else f"{where}.{part}"
    return obj


def _exit_message(what: str, exc: SystemExit) -> str:
    """Message for user code that called sys.exit() (a script run on import, argparse in a factory, ...)."""
    return (f"{what} called sys.exit({exc.code!r}); a module with the model must not exit on import or when the "
            "factory is called (guard script code with `if __name__ == '__main__':`, and do not parse "
            "command-line arguments in the factory)")


def _required_positional(obj: Callable) -> Optional[int]:
    """Number of positional parameters without defaults (None if the signature is unknown or takes *args)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    n = 0
    for p in sig.parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty:
            n += 1
    return n


def _is_factory(obj: Callable) -> bool:
    """A callable that can be called without arguments (a factory) rather than a model f(x)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty:
            return False
        if p.kind == p.VAR_POSITIONAL:
            return False
    return True


def load_model(model_or_factory: Union[str, Callable, nn.Module], seed: Optional[int] = None) -> Callable:
    """Resolve an import path ('pkg.mod:make_model', 'file.py:make_model'), a factory or a model to a model.

    A factory is called with torch's global RNG seeded by ``seed`` (inside ``torch.random.fork_rng``, so the
    caller's RNG state is untouched), which makes randomly initialised models reproducible.
    """
    obj = _load_attr(model_or_factory) if isinstance(model_or_factory, str) else model_or_factory
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise ModelError(f"{model_or_factory!r} is a {type(obj).__name__}, not a model or a factory returning one")
    n_required = _required_positional(obj)
    if not isinstance(obj, type) and n_required is not None and n_required > 1:
        name = getattr(obj, "__name__", obj)
        raise ModelError(f"{name!r} takes {n_required} required positional arguments: a model takes one (the inputs "
                         "x) and a factory none; give the factory's parameters defaults, or pass the model it returns")
    if isinstance(obj, type) or _is_factory(obj):
        try:
            with torch.random.fork_rng(devices=[]):
                if seed is not None:
                    torch.manual_seed(int(seed))
                model = obj()
        except SoftsymError:
            raise
        except SystemExit as exc:
            raise ModelError(_exit_message(f"the factory {getattr(obj, '__name__', obj)!r}", exc)) from None
        except Exception as exc:
            name = getattr(obj, "__name__", obj)
            raise ModelError(f"the factory {name!r} raised {type(exc).__name__}: {exc}") from exc
        if not callable(model):
            raise ModelError(f"the factory {getattr(obj, '__name__', obj)!r} returned {type(model).__name__}, "
                             "not a model (an nn.Module or a callable x -> y)")
        return model
    return obj


def _read_inputs_file(path: Path) -> np.ndarray:
    """The array 'x' of an NPZ file (or the array of an NPY file), numeric, not converted."""
    if not path.is_file():
        raise DataError(f"inputs file {str(path)!r} does not exist (or is not a file)")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if not (magic.startswith(b"PK") or magic == b"\x93NUMPY"):  # np.load would try to unpickle anything else
        raise DataError(f"cannot read {str(path)!r}: it is not an NPZ / NPY file (written by np.savez / np.save); "
                        "save inputs with np.savez(path, x=inputs)")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # an .npy file holds one array
            arr = loaded
        else:
            with loaded as data:
                if "x" not in data.files:
                    raise DataError(f"{str(path)!r} has no array 'x' (keys: {', '.join(data.files) or 'none'}); "
                                    "save inputs with np.savez(path, x=inputs)")
                arr = np.asarray(data["x"])
    except SoftsymError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read {str(path)!r}: it is not an NPZ / NPY file of numeric arrays (np.load: "
                        f"{exc}); save inputs with np.savez(path, x=inputs)") from exc
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"array 'x' in {str(path)!r} is not numeric (dtype {arr.dtype})")
    return arr


def _load_inputs(inputs, n_inputs: int, rep_in, seed: int) -> Tuple[torch.Tensor, str]:
    """Inputs (B, rep_in.size) float64, validated like the metrics' inputs (shape, complex, NaN), and a description."""
    if inputs is None:
        if isinstance(n_inputs, bool) or not isinstance(n_inputs, (int, np.integer)) or n_inputs < 1:
            raise ConfigError(f"n_inputs must be a positive integer, got {n_inputs!r}")
        gen = torch.Generator().manual_seed(int(seed))
        x = torch.randn(int(n_inputs), rep_in.size, dtype=torch.float64, generator=gen)
        return x, f"N(0,1) float64, seed {seed}"
    if isinstance(inputs, (str, Path)):
        arr = _read_inputs_file(Path(inputs))
        # native-order float64 (or complex128, refused below with a clear message): big-endian files, uint64 or
        # float16 arrays are not all convertible by torch.from_numpy
        arr64 = arr.astype(np.complex128 if np.iscomplexobj(arr) else np.float64)
        try:
            x = _as_inputs(torch.from_numpy(arr64), rep_in)
        except DataError as exc:
            raise DataError(f"array 'x' in {str(inputs)!r}: {exc}") from None
        return x, f"{inputs} (x: {tuple(arr.shape)})"
    x = _as_inputs(inputs, rep_in)
    return x, f"given tensor {tuple(x.shape)}"


def _has_floating_tensors(model) -> bool:
    return isinstance(model, nn.Module) and any(t.is_floating_point()
                                                for t in list(model.parameters()) + list(model.buffers()))


def _output_dtype(model, x: torch.Tensor) -> Optional[torch.dtype]:
    """The floating dtype a callable returns for inputs x (None when it fails: the metrics report why)."""
    try:
        with torch.no_grad(), _eval_mode(model):
            y = model(x)
    except Exception:  # noqa: BLE001 - the metrics call it again and raise a ModelError with the cause
        return None
    return y.dtype if isinstance(y, torch.Tensor) and y.is_floating_point() and not y.is_complex() else None


def _verdict(max_error: float, mean_error: float, exact_tol: float, approx_tol: float) -> str:
    if math.isfinite(max_error) and max_error <= exact_tol:
        return "exact"
    if math.isfinite(mean_error) and mean_error <= approx_tol:
        return "approximate"
    return "not equivariant"


# ====================================================================== check
def _refuse_point_cloud_wrapper(model) -> None:
    """ConfigError for a bare FrameAverage / Canonicalize: check passes flat (batch, rep_in.size) inputs, and
    those wrappers take point clouds (batch, n_points, channels), so every call would fail on the shape."""
    if isinstance(model, _FrameBase):
        name = type(model).__name__
        raise ConfigError(
            f"check passes flat inputs (batch, rep_in.size), but a {name} takes point clouds (batch, n_points, "
            f"{model.channels}); return a module that reshapes, e.g. forward(x) = {name.lower()}(x.view(len(x), "
            f"n_points, {model.channels})).flatten(1), with rep_in = n_points*V (+ scalars) in the same order")


def _one_of(value, alias, name: str, alias_name: str):
    """``value`` or its keyword alias, refusing both at once."""
    if value is not None and alias is not None:
        raise ConfigError(f"give {name}= or {alias_name}=, not both")
    return value if value is not None else alias


def check(model_or_factory: Union[str, Callable, nn.Module, None] = None,
          groups: Optional[Union[str, Group, Sequence[Union[str, Group]]]] = None,
          rep_in: Optional[Union[str, Rep]] = None, rep_out: Optional[Union[str, Rep]] = None, *,
          n_inputs: int = 64, seed: int = 0, inputs: Optional[Union[torch.Tensor, np.ndarray, str, os.PathLike]] = None,
          n_samples: int = DEFAULT_N_SAMPLES, exact_tol: Optional[float] = None, approx_tol: float = DEFAULT_APPROX_TOL,
          lie: bool = True, spread: Optional[float] = None, model: Union[str, Callable, nn.Module, None] = None,
          group: Optional[Union[str, Group, Sequence[Union[str, Group]]]] = None) -> CheckReport:
    """Measure how equivariant a model is under one or several groups.

    Parameters
    ----------
    model_or_factory : an nn.Module / callable (B, n_in) -> (B, n_out), a zero-argument factory returning one,
        or an import path 'pkg.module:make_model' / 'path/to/file.py:make_model'.
    groups : a group (object or spec "O(3)") or a list of them.
    rep_in, rep_out : rep specs ("5V0+5V", "V**2") or unbound Reps, bound to each group.
    n_inputs, seed : inputs drawn N(0, 1) in float64 (ignored when ``inputs`` is given).
    inputs : a tensor / array (B, n_in) or the path of an NPZ file with key "x".
    n_samples : sampled elements per group (small finite groups are checked exhaustively).
    exact_tol : "exact" threshold on the max error (default 1e-9 for float64 models, 1e-5 for float32).
    approx_tol : "approximate" threshold on the mean error (default 0.1).
    lie : also compute Lie-derivative errors (forward-mode AD; reverse mode twice or finite differences when the
        model does not support it; the method used is reported).

    model, group : keyword aliases of ``model_or_factory`` and ``groups`` (``check(model=f, group="O(3)", ...)``).

    Returns a :class:`CheckReport`; raises ModelError for unloadable models, wrong output shapes or NaN outputs.
    """
    model_or_factory = _one_of(model_or_factory, model, "model_or_factory", "model")
    groups = _one_of(groups, group, "groups", "group")
    for value, name in ((model_or_factory, "a model (model_or_factory=)"), (groups, "a group (groups=)"),
                        (rep_in, "rep_in"), (rep_out, "rep_out")):
        if value is None:
            raise ConfigError(f"check needs {name}: check(model, 'O(3)', rep_in='5V0+5V', rep_out='V**2')")
    check_seed(seed, allow_none=False)
    for v, name in ((exact_tol, "exact_tol"), (approx_tol, "approx_tol")):
        if v is None and name == "exact_tol":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or math.isnan(v) or v < 0:
            raise ConfigError(f"{name} must be a non-negative number, got {v!r}")
    if not isinstance(lie, (bool, np.bool_)):
        raise ConfigError(f"lie must be True or False (also compute Lie-derivative errors), got {lie!r}")
    label = model_or_factory if isinstance(model_or_factory, str) else type(model_or_factory).__name__
    if not isinstance(model_or_factory, str) and not isinstance(model_or_factory, nn.Module):
        label = getattr(model_or_factory, "__name__", label)
    model = load_model(model_or_factory, seed=seed)
    _refuse_point_cloud_wrapper(model)
    group_list = [groups] if isinstance(groups, (str, Group)) else list(groups)
    if not group_list:
        raise ConfigError("check needs at least one group, e.g. --group 'O(3)'")
    parsed = [parse_group(g) for g in group_list]
    names = [g.name for g in parsed]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"check lists the same group twice ({', '.join(twice)}); give every group once")
    if spread is not None and (isinstance(spread, bool) or not isinstance(spread, (int, float, np.integer, np.floating))
                               or not math.isfinite(spread) or spread < 0):
        raise ConfigError(f"spread must be a finite number >= 0 (the sampler spread of non-compact groups), got "
                          f"{spread!r}")
    first_in = _make_rep(rep_in, parsed[0])
    for g in parsed[1:]:
        for spec, r0 in ((rep_in, first_in), (rep_out, _make_rep(rep_out, parsed[0]))):
            r = _make_rep(spec, g)
            if r.size != r0.size:
                raise ConfigError(f"the rep {spec!s} has size {r0.size} for {parsed[0].name} but {r.size} for {g.name}; "
                                  "every checked group must act on the same model inputs and outputs (check groups "
                                  "of different dimensions separately, or embed them, e.g. 'O(2)@z')")
    x, inputs_desc = _load_inputs(inputs, n_inputs, first_in, seed)
    mdtype, _ = model_dtype_device(model, x)
    metric_dtype = None
    if not _has_floating_tensors(model):  # a plain callable: judge it in the precision it computes in
        out_dtype = _output_dtype(model, x[:2].to(mdtype))
        if out_dtype is not None and torch.finfo(out_dtype).eps > torch.finfo(mdtype).eps:
            mdtype = metric_dtype = out_dtype
    tol = exact_tolerance(mdtype) if exact_tol is None else float(exact_tol)
    if tol < 0 or approx_tol < 0:
        raise ConfigError(f"tolerances must be non-negative, got exact_tol={tol}, approx_tol={approx_tol}")
    report = CheckReport(model=str(label), dtype=str(mdtype).replace("torch.", ""), n_inputs=int(x.shape[0]),
                         inputs=inputs_desc, seed=int(seed), n_samples=int(n_samples), exact_tol=tol,
                         approx_tol=float(approx_tol), lie=bool(lie))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateFrameWarning)
        _check_groups(report, model, parsed, rep_in, rep_out, x, n_samples, seed, spread, metric_dtype, lie, tol,
                      approx_tol)
    _reissue_warnings(caught)
    return report


def _reissue_warnings(caught) -> None:
    """Warnings recorded during check, re-issued with the frame wrappers' degenerate-cloud warning once (it is
    raised on every metric call, with counts of internal batches of transformed copies the user never made)."""
    import re

    degenerate = None
    for w in caught:
        if issubclass(w.category, DegenerateFrameWarning):
            degenerate = degenerate or w
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if degenerate is not None:
        text = re.sub(r"\d+ of \d+ point clouds have", "some of the checked point clouds (the inputs or their "
                      "transformed copies) have", str(degenerate.message), count=1)
        warnings.warn(text, DegenerateFrameWarning, stacklevel=3)


def _check_groups(report, model, parsed, rep_in, rep_out, x, n_samples, seed, spread, metric_dtype, lie, tol,
                  approx_tol) -> None:
    """Append one GroupCheck per group to ``report``."""
    for g in parsed:
        rin, rout = _make_rep(rep_in, g), _make_rep(rep_out, g)
        eq = equivariance_error(model, g, rin, rout, x, n_samples, seed=seed, spread=spread, dtype=metric_dtype)
        lie_res = None
        if lie and len(g.lie_np):
            lie_res = lie_derivative_error(model, g, rin, rout, x, method="auto", dtype=metric_dtype)
        # the capped errors: EMLP's floor mean|g - I| hid the error of models with small outputs (a random linear
        # map times 1e-12 was "exact" under S(5))
        max_error = max(eq.capped_max, lie_res.max if lie_res is not None else 0.0)
        if lie_res is not None and not math.isfinite(lie_res.max):
            max_error = math.inf
        mean_error = eq.capped_mean
        verdict, note = _verdict(max_error, mean_error, tol, approx_tol), ""
        if eq.negligible_output() and verdict != "exact":
            # the size of the outputs alone cannot tell round-off of a zero map from a small model, so the verdict
            # stays the errors'; the note says how to read it
            note = (f"the outputs are as small as round-off (rms f(x) = {eq.output_rms:.1e}, rms x = "
                    f"{eq.input_rms:.1e}): if the model is meant to be the zero map (e.g. averaged onto a zero "
                    "equivariant space), these errors compare round-off with round-off and it is exactly "
                    "equivariant; otherwise rescale its outputs")
        report.results.append(GroupCheck(
            group=g.name, rep_in=repr(rin), rep_out=repr(rout), verdict=verdict,
            max_error=float(max_error), mean_error=float(mean_error), equivariance=eq, lie=lie_res, note=note,
        ))
