"""Trainer: Adam + cosine schedule, minibatches, best-validation selection, strength tuners, run directories,
checkpoint/resume and final float64 metrics (test MSE, equivariance error per candidate group).

>>> from softsym.data import make_task
>>> from softsym.models import build_model
>>> from softsym.train import TrainConfig, Trainer
>>> task = make_task("mixed-inertia:o2z", n_train=200, seed=0)          # doctest: +SKIP
>>> model = build_model("soft", task, ch=32)                             # doctest: +SKIP
>>> result = Trainer(model, task, TrainConfig(epochs=50, lr=1e-3)).fit() # doctest: +SKIP
>>> result.metrics["test_mse"], result.metrics["strengths"]              # doctest: +SKIP

Run directory (``TrainConfig.run_dir``)::

    config.json     the training config, model spec and tuner settings (a different config is never overwritten
                    unless ``overwrite=True``; ``resume=True`` continues a run with the same config)
    metrics.jsonl   one JSON line per epoch (losses, lr, validation MSE, strengths)
    last.pt         last epoch-boundary checkpoint: model/optimizer/schedule/tuner state, SoftSymmetry history,
                    RNG states (torch, numpy, python, samplers) as tensors and lists -- torch.load(weights_only=True)
    best.pt         best-validation model state_dict + metadata
    metrics.json    final metrics

Resuming from ``last.pt`` reproduces an uninterrupted run on CPU (same parameters bit for bit with a fixed seed):
checkpoints are taken at epoch boundaries and restore every source of randomness the loop uses.

Parallelism: the loop talks to a :class:`~softsym.parallel.Strategy` for everything that changes under data
parallelism (which rows of a global minibatch a process takes, gradient all-reduce, reducing statistics, who writes
files). ``TrainConfig(world_size=N)`` spawns N local processes (gloo) that each take 1/N of every global batch of
``batch_size`` rows; ``strategy=TorchDistributed()`` runs inside a process group you launched (torchrun). Both
reach the single-process parameters up to floating-point summation order (see :mod:`softsym.parallel`).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Union

import numpy as np
import torch

from .errors import ConfigError, DataError, ModelError
from .metrics import call_model, model_dtype_device
from .parallel import (STOP_TARGETS, SingleProcess, Strategy, TorchDistributed, note_stop_signal,
                       take_pending_stop)
from .soft.tuning import StrengthTuner, TunerContext, make_tuner

if TYPE_CHECKING:
    from .data.synthetic import Task

__all__ = ["TrainConfig", "Trainer", "default_config", "FitResult", "Strategy", "SingleProcess", "TorchDistributed",
           "CosineSchedule", "load_checkpoint",
           "RUN_FILES"]

CHECKPOINT_FORMAT = "softsym-checkpoint"
CHECKPOINT_VERSION = 1
RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt", "metrics.json")
#: Config fields that do not change the result (ignored when comparing a run directory's config).
_VOLATILE = ("run_dir", "resume", "overwrite", "progress", "stop_after", "checkpoint_every", "world_size")
#: how messages name the run-directory options: the Trainer is used from Python and behind the CLI
_RESUME, _OVERWRITE, _RUN_DIR = "resume=True (--resume)", "overwrite=True (--overwrite)", "run_dir= / --run-dir"


@contextlib.contextmanager
def message_wording(resume: Optional[str] = None, overwrite: Optional[str] = None,
                    run_dir: Optional[str] = None) -> Iterator[None]:
    """Within the block, the trainer's messages name these options (the CLI's flags, or "run the same command
    again" for commands that reuse their runs) instead of both the Python keywords and the ``fit`` flags."""
    global _RESUME, _OVERWRITE, _RUN_DIR
    saved = (_RESUME, _OVERWRITE, _RUN_DIR)
    _RESUME, _OVERWRITE, _RUN_DIR = resume or _RESUME, overwrite or _OVERWRITE, run_dir or _RUN_DIR
    try:
        yield
    finally:
        _RESUME, _OVERWRITE, _RUN_DIR = saved


@dataclass
class TrainConfig:
    """Training settings (every field is saved in the run's config.json).

    lr, epochs, batch_size : Adam learning rate, epochs, minibatch size (the last batch may be smaller).
    weight_decay : L2 penalty 0.5 * wd * ||theta||^2 (PER's convention, coupled with Adam: wd * theta is added to
        the gradients before the Adam step).
    seed : seeds the batch order, the tuner's validation batches and the evaluation samples.
    schedule : "cosine" (per epoch, from lr to min_lr, as PER) or "constant" (as EMLP's training script).
    select : "val" (best validation MSE checkpoint) or "last". select_after: only epochs with index+1 >
        select_after may be selected (default: the tuner's rule, e.g. 2 T_adj for PER, else 0).
    eval_every : validation every this many epochs (and at the last epoch).
    run_dir, resume, overwrite : run directory handling (see the module docstring).
    checkpoint_every : epochs between checkpoints (0: every 30 s of training and at the end).
    stop_after : stop (after checkpointing) when this many epochs have been done in total; used to split a run
        into slices or to simulate an interruption.
    progress : rich progress bar (None: only when stderr is a terminal).
    tuner : "per", "soft", "none", or None for the model's default; tuner_options: keyword options for it.
    equivariance_samples, equivariance_points : group elements and test inputs of the equivariance error.
    world_size : local processes that share every minibatch (data parallelism on this machine; each gets
        1/world_size of the CPU threads). The global batch stays ``batch_size``; the result equals the
        single-process one up to summation order, so a run may be resumed with another world_size.
    """

    lr: float = 3e-3
    epochs: int = 100
    batch_size: int = 500
    weight_decay: float = 0.0
    seed: int = 0
    schedule: str = "cosine"
    min_lr: float = 0.0
    select: str = "val"
    select_after: Optional[int] = None
    eval_every: int = 1
    run_dir: Optional[str] = None
    resume: bool = False
    overwrite: bool = False
    checkpoint_every: int = 0
    stop_after: Optional[int] = None
    progress: Optional[bool] = None
    tuner: Optional[str] = None
    tuner_options: Dict[str, Any] = field(default_factory=dict)
    equivariance_samples: int = 16
    equivariance_points: int = 256
    world_size: int = 1

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field and what it accepts (the Trainer calls it first)."""
        def positive(name, integer=True):
            v = getattr(self, name)
            ok = isinstance(v, int if integer else (int, float)) and not isinstance(v, bool)
            if not ok or not v > 0 or (not integer and not math.isfinite(v)):
                raise ConfigError(f"{name} must be a positive {'integer' if integer else 'number'}, got {v!r}")

        for name in ("epochs", "batch_size", "eval_every", "equivariance_samples", "equivariance_points"):
            positive(name)
        positive("lr", integer=False)
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.min_lr, (int, float)) and math.isfinite(self.min_lr) and 0 <= self.min_lr <= self.lr):
            raise ConfigError(f"min_lr must be a number between 0 and lr = {self.lr!r}, got {self.min_lr!r}")
        for name, optional in (("seed", False), ("checkpoint_every", False), ("select_after", True)):
            v = getattr(self, name)
            if not (optional and v is None) and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ConfigError(f"{name} must be a non-negative integer{' or None' if optional else ''}, got {v!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.select not in ("val", "last"):
            raise ConfigError(f"select must be 'val' or 'last', got {self.select!r}")
        if self.stop_after is not None and (not isinstance(self.stop_after, int) or isinstance(self.stop_after, bool)
                                            or self.stop_after < 1):
            raise ConfigError(f"stop_after must be a positive integer, got {self.stop_after!r}")
        if not isinstance(self.world_size, int) or isinstance(self.world_size, bool) or self.world_size < 1:
            raise ConfigError(f"world_size must be a positive integer (processes), got {self.world_size!r}")
        if not isinstance(self.tuner_options, dict):
            raise ConfigError(f"tuner_options must be a dict of tuner keyword options, e.g. {{'power': 2}}, got "
                              f"{type(self.tuner_options).__name__} {self.tuner_options!r}")
        if self.run_dir is not None and not isinstance(self.run_dir, (str, os.PathLike)):
            raise ConfigError(f"run_dir must be a path (str or pathlib.Path) or None, got {type(self.run_dir).__name__} "
                              f"{self.run_dir!r}")
        if self.resume and self.overwrite:
            raise ConfigError("resume and overwrite exclude each other: resume continues a run, overwrite replaces it")
        if self.resume and not self.run_dir:
            raise ConfigError(f"resume needs a run directory ({_RUN_DIR}) holding the run to continue")

    def to_dict(self) -> Dict:
        """Every field as a plain dict (the run directory's config.json records it to detect changed runs)."""
        return dataclasses.asdict(self)


#: common names of TrainConfig fields under other spellings, for the unknown-field message
_FIELD_HINTS = {"learning_rate": "lr", "n_epochs": "epochs", "num_epochs": "epochs", "max_epochs": "epochs",
                "bs": "batch_size", "batchsize": "batch_size", "wd": "weight_decay", "scheduler": "schedule",
                "out": "run_dir", "output_dir": "run_dir", "nproc": "world_size", "n_proc": "world_size"}


def _checked_init(init):
    """TrainConfig's dataclass __init__, with a ConfigError (not a bare TypeError) for an unknown field."""
    import functools

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        names = [f.name for f in dataclasses.fields(TrainConfig)]
        for key in kwargs:
            if key not in names:
                import difflib  # only on this error path: not at import time

                guess = _FIELD_HINTS.get(key) or next(iter(difflib.get_close_matches(key, names, 1)), None)
                raise ConfigError(f"TrainConfig has no field {key!r}{f' (did you mean {guess!r}?)' if guess else ''}; "
                                  f"fields: {', '.join(names)}")
        if len(args) > len(names):
            raise ConfigError(f"TrainConfig takes at most {len(names)} positional fields ({', '.join(names)}), "
                              f"got {len(args)}")
        init(self, *args, **kwargs)

    return __init__


TrainConfig.__init__ = _checked_init(TrainConfig.__init__)


def default_config(task: Task, model: str = "mlp", n_train: Optional[int] = None, **overrides: Any) -> TrainConfig:
    """The original protocol's TrainConfig for ``task`` (overrides win).

    EMLP's tasks (O5Synthetic, Inertia, ParticleInteraction): Adam 3e-3 at a constant rate (EMLP's training
    script), batch 500, epochs = min(30 * 30000 / N, 1000). MixedInertia (PER): Adam 1e-3 cosine, batch 500,
    8000 epochs, and the L2
    weight decay 2e-4 that PER applies to its soft models (per / soft); its other models get none.
    """
    n = int(n_train if n_train is not None else len(task.x_train))
    protocol = (getattr(task, "info", None) or {}).get("protocol", "emlp")
    kind = str(model).split(":", 1)[0].strip().lower()
    if protocol == "per":
        base = dict(lr=1e-3, epochs=8000, batch_size=500, weight_decay=2e-4 if kind in ("per", "soft") else 0.0,
                    schedule="cosine")
    else:
        base = dict(lr=3e-3, epochs=max(1, min(int(30 * 30000 / n), 1000)), batch_size=500, weight_decay=0.0,
                    schedule="constant")
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


class CosineSchedule:
    """Per-epoch learning rate: lr_min + (lr - lr_min) (1 + cos(pi e / E)) / 2 (or constant)."""

    def __init__(self, lr: float, epochs: int, kind: str = "cosine", min_lr: float = 0.0):
        self.lr, self.epochs, self.kind, self.min_lr = float(lr), int(epochs), kind, float(min_lr)
        self.epoch = 0

    def value(self, epoch: int) -> float:
        """The learning rate for ``epoch`` (counted from 0)."""
        if self.kind == "constant":
            return self.lr
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))

    def state_dict(self) -> Dict:
        """The schedule's settings and current epoch, saved in checkpoints."""
        return {"lr": self.lr, "epochs": self.epochs, "kind": self.kind, "min_lr": self.min_lr, "epoch": self.epoch}

    def load_state_dict(self, state: Dict) -> None:
        """Restore :meth:`state_dict`'s output (on resume)."""
        self.lr, self.epochs, self.kind = float(state["lr"]), int(state["epochs"]), str(state["kind"])
        self.min_lr, self.epoch = float(state["min_lr"]), int(state["epoch"])


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns: final metrics (also in metrics.json), the trained model (best checkpoint
    loaded), the per-epoch log and the strength history."""

    metrics: Dict
    model: torch.nn.Module
    log: List[Dict]
    history: List[Dict]
    run_dir: Optional[str] = None
    finished: bool = True


# ------------------------------------------------------------------ RNG state <-> tensors
def _group_label(g) -> str:
    """A candidate's key in the metrics: a spec string as given, a Group by its name."""
    return g if isinstance(g, str) else getattr(g, "name", str(g))


def _rng_state(samplers: Dict[str, torch.Generator]) -> Dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]), "state": [int(x) for x in py_state[1]],
                   "gauss_next": None if py_state[2] is None else float(py_state[2])},
        "samplers": {k: g.get_state() for k, g in samplers.items()},
    }


def _set_rng_state(state: Dict, samplers: Dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    for k, g in samplers.items():
        g.set_state(state["samplers"][k])


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_checkpoint(path: Union[str, os.PathLike]) -> Dict:
    """Load a softsym checkpoint (``last.pt`` / ``best.pt``) safely (``weights_only=True``)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's own text would suggest weights_only=False, which is never needed here
        raise ConfigError(f"cannot read checkpoint {path}: the file is corrupt, truncated or not a softsym checkpoint "
                          f"({type(exc).__name__}); delete it, or use {_OVERWRITE}, to start the run again") from None


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else (1e308 if obj > 0 else -1e308)
    return obj


def _mse64(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float(((pred.detach().double().cpu() - y.double().cpu()) ** 2).mean())


class Trainer:
    """Train ``model`` on ``task`` with ``config``; ``fit()`` returns a :class:`FitResult`.

    ``tuner``: a :class:`~softsym.soft.tuning.StrengthTuner`, a name ("per", "soft", "none"), or None to use
    ``config.tuner`` and otherwise the model's default (``model.tuner_name``, set by ``build_model`` for per/soft).
    """

    def __init__(self, model: torch.nn.Module, task: Task, config: Optional[TrainConfig] = None,
                 tuner: Optional[Union[str, StrengthTuner]] = None, strategy: Optional[Strategy] = None):
        if config is not None and not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a softsym.train.TrainConfig, got {type(config).__name__}; e.g. "
                              "TrainConfig(**your_dict)")
        if not isinstance(model, torch.nn.Module):
            raise ConfigError(f"Trainer needs a torch.nn.Module model, got {type(model).__name__}; build one with "
                              "softsym.build_model(name, task)")
        if not all(hasattr(task, a) for a in ("splits", "x_train", "y_train", "x_val", "y_val", "x_test", "y_test",
                                              "rep_in", "rep_out", "group")):
            raise ConfigError(f"Trainer needs a task from softsym.make_task(name, ...), got {type(task).__name__}")
        self.config = config or TrainConfig()
        self.config.validate()
        self.model, self.task = model, task
        if strategy is not None and not isinstance(strategy, Strategy):
            raise ConfigError(f"strategy must be a softsym.parallel.Strategy (SingleProcess, TorchDistributed), got "
                              f"{type(strategy).__name__}")
        self.strategy = strategy or SingleProcess()
        if tuner is None:
            tuner = self.config.tuner if self.config.tuner is not None else getattr(model, "tuner_name", None)
        self.tuner: Optional[StrengthTuner] = make_tuner(tuner, **(self.config.tuner_options or {})) \
            if not isinstance(tuner, StrengthTuner) else tuner
        self.run_dir = Path(self.config.run_dir) if self.config.run_dir else None
        params = list(model.parameters())
        if not any(p.requires_grad for p in params):
            raise ConfigError(f"the model ({type(model).__name__}) has no trainable parameters, so there is nothing to "
                              "train; evaluate it directly (softsym.check / softsym.metrics) instead")
        self.dtype = params[0].dtype if params else torch.float32
        self.device = params[0].device if params else torch.device("cpu")  # data follow the model (GPU users)
        self.log: List[Dict] = []

    # ------------------------------------------------------------------ config / run directory
    def _run_config(self) -> Dict:
        cfg = {k: v for k, v in self.config.to_dict().items() if k not in _VOLATILE}
        return _jsonable({
            "train": cfg,
            "model": getattr(self.model, "spec", None) or {"class": type(self.model).__name__},
            "task": {"name": getattr(self.task, "name", None), "info": getattr(self.task, "info", {})},
            "tuner": self.tuner.config() if self.tuner is not None else None,
        })

    def same_run_in_dir(self) -> bool:
        """True when the run directory holds a run with this exact config (or nothing at all)."""
        if self.run_dir is None or not (self.run_dir / "config.json").exists():
            return True
        try:
            existing = json.loads((self.run_dir / "config.json").read_text())
        except json.JSONDecodeError:
            return False
        return isinstance(existing, dict) and _comparable(existing) == _comparable(self._run_config())

    def _prepare_run_dir(self) -> bool:
        """Create/check the run directory (rank 0); True when a checkpoint should be resumed. Under data
        parallelism rank 0's decision (or its error) is shared with every process."""
        return bool(self.strategy.run_on_main(self._prepare_run_dir_main))

    def _prepare_run_dir_main(self) -> bool:
        d = self.run_dir
        if d is None:
            return False
        cfg = self._run_config()
        cfg_path = d / "config.json"
        if d.exists() and not d.is_dir():
            raise ConfigError(f"run directory {d} exists and is not a directory")
        existing = None
        if cfg_path.exists():
            try:
                existing = json.loads(cfg_path.read_text())
            except json.JSONDecodeError:
                existing = {"unreadable": True}
        occupied = d.exists() and any(d.iterdir())
        if self.config.overwrite:
            for name in RUN_FILES:
                p = d / name
                if p.exists():
                    p.unlink()
        elif existing is not None:
            if not isinstance(existing, dict) or existing.get("unreadable"):
                raise ConfigError(f"{cfg_path} is not a readable softsym run config (invalid JSON); use another "
                                  f"run directory ({_RUN_DIR}), or {_OVERWRITE} to replace the run")
            same = _comparable(existing) == _comparable(cfg)
            if not same:
                diff = _config_diff(_comparable(existing), _comparable(cfg))
                old_info = (existing.get("task") or {}).get("info") or {} if isinstance(existing.get("task"), dict) \
                    else {}
                new_info = cfg["task"].get("info") or {}
                if "sha256" in new_info and old_info.get("sha256") not in (None, new_info["sha256"]):
                    diff = (f"the data file {new_info.get('source')} has changed since that run (content hash "
                            f"{old_info['sha256']} -> {new_info['sha256']}); {diff}")
                extend = ""
                if "epochs" in diff and self.config.resume:  # the cosine schedule and the tuners depend on it
                    extend = ("; a run cannot be extended to more epochs (its learning-rate schedule and tuner are "
                              "laid out over the planned length): plan the full length and stop early with "
                              "TrainConfig(stop_after=N) instead, then resume")
                raise ConfigError(
                    f"run directory {d} holds a run with a different config ({diff}); use another run directory "
                    f"({_RUN_DIR}), or {_OVERWRITE} to replace it{extend}"
                )
            if not self.config.resume:
                raise ConfigError(
                    f"run directory {d} already holds this run; pass {_RESUME} to continue it (or to reuse its "
                    f"result) or {_OVERWRITE} to start again"
                )
        elif occupied:
            raise ConfigError(f"run directory {d} is not empty and holds no softsym run; choose an empty or new "
                              f"directory (or {_OVERWRITE} to write into it anyway)")
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create run directory {d}: {exc.strerror or exc}") from None
        from . import __version__ as version  # noqa: F401  (lazy; package root imports nothing from here)

        _atomic_write_text(json.dumps({**cfg, "softsym": version}, indent=2), cfg_path)
        return self.config.resume and (d / "last.pt").exists()

    # ------------------------------------------------------------------ checkpoints
    @torch.no_grad()
    def _restart(self, model: torch.nn.Module, step: int, sym) -> None:
        """Second stage of a restarting tuner: initial parameters back, Adam's moments cleared, strengths kept."""
        for name, p in model.named_parameters():
            p.copy_(self._initial_params[name])
        self.optimizer.state.clear()
        if sym is not None:
            sym.record(step, model.residuals().detach().double().cpu(), event="restart", tuner=self.tuner.name)

    def _checkpoint(self, epoch: int, step: int, best: Dict, best_state, best_dirty: bool, train_seconds: float):
        d = self.run_dir
        if d is None or not self.strategy.is_main:
            return
        if best_dirty and best_state is not None:
            _atomic_save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": best_state,
                          "epoch": best["epoch"], "val_mse": best["val"],
                          "meta": {"model": getattr(self.model, "spec", {}), "strengths": best.get("strengths")}},
                         d / "best.pt")
        sym = getattr(self.model, "symmetry", None) if hasattr(self.model, "residuals") else None
        state = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "epoch": epoch, "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "tuner": self.tuner.state_dict() if self.tuner is not None else None,
            "symmetry": {"strengths": sym.strengths.clone(), "history": _jsonable(sym.history)} if sym is not None
            else None,
            "rng": _rng_state(self._samplers),
            "initial_params": self._initial_params,
            "best": {"val": best["val"], "epoch": best["epoch"], "strengths": best.get("strengths")},
            "timing": {"train_seconds": train_seconds, "step_seconds_total": self._step_seconds,
                       "steps_timed": self._steps_timed},
            "meta": {"config": self._run_config(), "time": time.time()},
        }
        _atomic_save(state, d / "last.pt")

    def _restore(self) -> Dict:
        ck = load_checkpoint(self.run_dir / "last.pt")
        missing = [k for k in ("epoch", "step", "model", "optimizer", "scheduler", "rng", "best")
                   if not isinstance(ck, dict) or k not in ck]
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT or missing:
            raise ConfigError(f"{self.run_dir / 'last.pt'} is not a complete softsym checkpoint"
                              + (f" (missing {', '.join(missing)})" if isinstance(ck, dict) and missing else "")
                              + f"; delete it to restart the run, or use {_OVERWRITE}")
        try:
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ConfigError(f"{self.run_dir / 'last.pt'} does not match this model ({str(exc).splitlines()[0]}); "
                              f"use another run directory ({_RUN_DIR}), or {_OVERWRITE} to start again") from None
        self.schedule.load_state_dict(ck["scheduler"])
        if self.tuner is not None and ck.get("tuner") is not None:
            self.tuner.load_state_dict(ck["tuner"])
        if ck.get("symmetry") is not None and hasattr(self.model, "residuals"):
            sym = self.model.symmetry
            sym.strengths.copy_(ck["symmetry"]["strengths"])
            sym.history = list(ck["symmetry"]["history"])
        _set_rng_state(ck["rng"], self._samplers)
        if self._initial_params is not None and ck.get("initial_params") is not None:
            self._initial_params = {k: v.clone() for k, v in ck["initial_params"].items()}
        timing = ck.get("timing", {})
        self._step_seconds = float(timing.get("step_seconds_total", 0.0))
        self._steps_timed = int(timing.get("steps_timed", 0))
        best = {"val": ck["best"]["val"], "epoch": ck["best"]["epoch"], "strengths": ck["best"].get("strengths")}
        best_state = None
        if best["epoch"] is not None and (self.run_dir / "best.pt").exists():
            best_state = load_checkpoint(self.run_dir / "best.pt")["model"]
        # keep the epoch log consistent with the checkpoint
        log_path = self.run_dir / "metrics.jsonl"
        if log_path.exists():
            kept = []
            for line in log_path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if row.get("epoch", 0) <= ck["epoch"]:
                    kept.append(row)
            self.log = kept
            if self.strategy.is_main:
                _atomic_write_text("".join(json.dumps(r) + "\n" for r in kept), log_path)
        return {"epoch": int(ck["epoch"]), "step": int(ck["step"]), "best": best, "best_state": best_state,
                "train_seconds": float(timing.get("train_seconds", 0.0))}

    # ------------------------------------------------------------------ evaluation
    def _predict(self, model, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        dev = model_dtype_device(model, x)[1]
        outs = []
        with torch.no_grad():
            for i in range(0, len(x), batch):
                outs.append(model(x[i:i + batch].to(dev)).cpu())
        return torch.cat(outs)

    def evaluate(self, model: Optional[torch.nn.Module] = None) -> Dict:
        """Float64 evaluation of a float64 copy of the model: MSE on train/val/test (raw targets) and, for every
        candidate group, :func:`softsym.metrics.equivariance_error` (scale-adjusted ``mean`` / ``max`` and plain
        relative errors) on the first ``equivariance_points`` test inputs."""
        model = self.model if model is None else model
        m64 = copy.deepcopy(model).double().eval()
        out = {}
        for split, (x, y) in self.task.splits().items():
            out[f"{split}_mse"] = _mse64(self._predict(m64, x.double()), y)
        out["equivariance"] = self._equivariance(m64)
        return out

    def _equivariance(self, m64) -> Dict:
        task = self.task
        # the task's candidates, then any other candidate of the model (e.g. softsym fit --candidates)
        groups = {_group_label(g): g for g in dict.fromkeys(list(getattr(task, "candidates", ())) or [task.group])}
        for g in getattr(self.model, "candidates", None) or ():
            groups.setdefault(_group_label(g), g)  # a Group object counts as its name
        n = min(self.config.equivariance_points, len(task.x_test))
        x = task.x_test[:n].double().to(model_dtype_device(m64)[1])
        res = {}
        from .metrics import equivariance_error

        for j, (label, g) in enumerate(groups.items()):
            e = equivariance_error(m64, g, task.rep_in, task.rep_out, x, n_samples=self.config.equivariance_samples,
                                   seed=self.config.seed + 17 * j)
            res[label] = {"mean": float(e.mean), "max": float(e.max), "plain_mean": float(e.plain_mean),
                           "plain_max": float(e.plain_max), "n_samples": int(e.n_samples)}
        return res

    # ------------------------------------------------------------------ training
    def _loss_fn(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((pred - y) ** 2).mean()

    def _gradient_scale(self) -> float:
        """Factor on the loss (task + penalty) and the weight decay before backward: 1 / Var(y_train) when the
        targets' spread is far from 1 (std < 1e-2 or > 1e4), else 1. Adam's steps do not depend on a constant
        factor except through its eps = 1e-8, which swamps the gradients of targets on a 1e-8 scale (SI units):
        such a run used to stall at the constant predictor. Logged losses stay in the targets' units."""
        y = self.task.y_train.detach().to(torch.float64)
        var = float(((y - y.mean(0)) ** 2).mean()) if y.numel() else 1.0
        if not math.isfinite(var) or var <= 0 or 1e-4 <= var <= 1e8:
            return 1.0
        return 1.0 / var

    def _check_data(self) -> None:
        for split, (x, y) in self.task.splits().items():
            if len(x) == 0 or len(x) != len(y):
                raise DataError(f"task {self.task.name!r}: the {split} split has {len(x)} inputs and {len(y)} "
                                "targets; every split needs the same, positive number of both")
            for name, t in ((f"x_{split}", x), (f"y_{split}", y)):
                bad = int((~torch.isfinite(t)).sum())
                if bad:
                    raise DataError(f"task {self.task.name!r}: {name} has {bad} NaN or inf entries; remove or "
                                    "impute those samples before training")

    def fit(self) -> FitResult:
        """Train for ``config.epochs`` (checkpoints in ``run_dir`` when set, continued with ``config.resume``),
        keep the best-validation (or last) weights, evaluate them and return a :class:`FitResult`."""
        cfg, model, task = self.config, self.model, self.task
        strat = self.strategy
        self._check_data()
        if cfg.world_size > 1 and strat.world_size == 1:
            return self._fit_spawned()
        dev = self.device
        x_tr, y_tr = task.x_train.to(dev, self.dtype), task.y_train.to(dev, self.dtype)
        x_val, y_val = task.x_val.to(dev, self.dtype), task.y_val.to(dev, self.dtype)
        n = len(x_tr)
        self._check_output_shape(x_tr[:2], y_tr[:2])
        steps_per_epoch = math.ceil(n / cfg.batch_size)
        grad_scale = self._gradient_scale()
        if grad_scale != 1.0 and not hasattr(model, "y_std"):  # not a build_model (Standardized) model
            import warnings

            warnings.warn(f"the training targets have a variance of {1.0 / grad_scale:.3g}: a model that predicts them "
                          "in these raw units needs weights of that scale, which Adam cannot reach or resolve; "
                          "normalise the targets (or build the model with softsym.build_model, which does)",
                          UserWarning, stacklevel=2)
        strat.broadcast_module(model)  # every process starts from rank 0's parameters (and strengths)
        self.optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
        self.schedule = CosineSchedule(cfg.lr, cfg.epochs, cfg.schedule, cfg.min_lr)
        self._samplers = {"train": torch.Generator().manual_seed(int(cfg.seed)),
                          "val": torch.Generator().manual_seed(int(cfg.seed) + 1_000_003)}
        self._step_seconds, self._steps_timed = 0.0, 0
        if hasattr(model, "set_reference_inputs"):  # residuals that need inputs (SoftModel): a training batch
            model.set_reference_inputs(x_tr[:cfg.batch_size])
        if self.tuner is not None:
            self.tuner.attach(model, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch)
        select_after = cfg.select_after if cfg.select_after is not None else (
            self.tuner.select_after_epoch if self.tuner is not None else 0)
        restart_epoch = self.tuner.restart_epoch if self.tuner is not None else None
        # a tuner that restarts training needs the initial parameters (kept in the checkpoint for a resume)
        self._initial_params = {k: p.detach().clone() for k, p in model.named_parameters()} \
            if restart_epoch is not None else None

        resume = self._prepare_run_dir()
        start_epoch, step, train_seconds = 0, 0, 0.0
        best = {"val": float("inf"), "epoch": None, "strengths": None}
        best_state = None
        if resume:
            r = self._restore()
            start_epoch, step, best, best_state, train_seconds = (r["epoch"], r["step"], r["best"], r["best_state"],
                                                                 r["train_seconds"])
        elif self.run_dir is not None and strat.is_main:
            (self.run_dir / "metrics.jsonl").write_text("")

        def val_batch():
            idx = torch.randint(0, len(x_val), (min(cfg.batch_size, len(x_val)),), generator=self._samplers["val"])
            return x_val[idx], y_val[idx]

        sym = model.symmetry if hasattr(model, "residuals") and getattr(model, "symmetry", None) is not None else None
        # soft models with penalty="prox" shrink gradients before and weights after each optimiser step
        prox_grad = getattr(model, "proximal_gradient", None)
        prox = getattr(model, "proximal_step", None)
        end_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
        last_ck_time, last_ck_epoch = time.perf_counter(), start_epoch
        best_dirty = False
        progress = _Progress(cfg.progress if strat.is_main else False, total=cfg.epochs, done=start_epoch,
                             label=f"{getattr(model, 'model_name', type(model).__name__)} on {task.name}")
        interrupt = _GracefulInterrupt(enabled=self.run_dir is not None and strat.is_main,
                                       sigterm=strat.world_size == 1)
        try:
            with progress, interrupt:
                for epoch in range(start_epoch, end_epoch):
                    t_epoch = time.perf_counter()
                    lr = self.schedule.value(epoch)
                    self.schedule.epoch = epoch
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    model.train()
                    perm = torch.randperm(n, generator=self._samplers["train"])
                    tot_loss, tot_reg, tot_n = 0.0, 0.0, 0
                    for i in range(0, n, cfg.batch_size):
                        t0 = time.perf_counter()
                        batch = perm[i:i + cfg.batch_size]
                        idx = strat.shard(batch)  # this process's rows of the global minibatch
                        xb, yb = x_tr[idx], y_tr[idx]
                        if len(idx):
                            data_loss = self._loss_fn(model(xb), yb)
                        else:  # more processes than rows in this (last) batch
                            data_loss = torch.zeros((), dtype=self.dtype, device=dev)
                        reg = model.regularization() if hasattr(model, "regularization") else data_loss.new_zeros(())
                        # each process's mean loss, weighted by its share: the averaged gradient is the global mean's
                        share = len(idx) * strat.world_size / len(batch)
                        loss = (data_loss * share if share != 1.0 else data_loss) + reg
                        self.optimizer.zero_grad(set_to_none=True)
                        if loss.requires_grad:
                            (loss * grad_scale if grad_scale != 1.0 else loss).backward()
                        strat.all_reduce_gradients(model.parameters())
                        if cfg.weight_decay:  # gradient of 0.5 wd ||theta||^2, added directly (no graph nodes)
                            wd = cfg.weight_decay * grad_scale
                            with torch.no_grad():
                                for p in model.parameters():
                                    if p.requires_grad:
                                        if p.grad is None:
                                            p.grad = p.detach() * wd
                                        else:
                                            p.grad.add_(p, alpha=wd)
                        if prox_grad is not None:
                            prox_grad(lr)
                        self.optimizer.step()
                        if prox is not None:
                            prox(lr)
                        step += 1
                        self._step_seconds += time.perf_counter() - t0
                        self._steps_timed += 1
                        f_loss, f_reg = float(data_loss.detach()), float(reg.detach())
                        if strat.world_size > 1:  # the global batch's loss, so that every process agrees
                            stats = strat.all_reduce_sum(torch.tensor([f_loss * len(idx), f_reg], dtype=torch.float64))
                            f_loss, f_reg = float(stats[0]) / len(batch), float(stats[1]) / strat.world_size
                        if not (math.isfinite(f_loss) and math.isfinite(f_reg)):
                            self._diverged("training loss" if not math.isfinite(f_loss) else "regularisation",
                                           f_loss if not math.isfinite(f_loss) else f_reg, epoch, step, lr)
                        tot_loss += f_loss * len(batch)
                        tot_reg += f_reg * len(batch)
                        tot_n += len(batch)
                        if self.tuner is not None:
                            self.tuner.after_step(TunerContext(model=model, optimizer=self.optimizer, step=step,
                                                               epoch=epoch, lr=lr, loss_fn=self._loss_fn,
                                                               val_batch=val_batch, val_all=(x_val, y_val)))
                    if self.tuner is not None:
                        self.tuner.end_epoch(epoch)
                    if restart_epoch is not None and epoch + 1 == restart_epoch:
                        self._restart(model, step, sym)
                    row = {"epoch": epoch + 1, "step": step, "lr": lr,
                           "train_loss": tot_loss / max(tot_n, 1), "train_reg": tot_reg / max(tot_n, 1)}
                    if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                        model.eval()
                        val = _mse64(self._predict(model, x_val), task.y_val)
                        row["val_mse"] = val
                        if not math.isfinite(val):
                            self._diverged("validation MSE", val, epoch, step, lr)
                        selectable = cfg.select == "val" and (epoch + 1 > select_after or epoch + 1 == cfg.epochs
                                                              and best["epoch"] is None)
                        if selectable and (val < best["val"] or best["epoch"] is None):
                            best = {"val": val, "epoch": epoch + 1,
                                    "strengths": [float(s) for s in sym.strengths] if sym is not None else None}
                            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                            best_dirty = True
                    if sym is not None:
                        row["strengths"] = [float(s) for s in sym.strengths]
                    train_seconds += time.perf_counter() - t_epoch
                    row["seconds"] = train_seconds
                    self.log.append(row)
                    if self.run_dir is not None and strat.is_main:
                        with open(self.run_dir / "metrics.jsonl", "a") as fh:
                            fh.write(json.dumps(_jsonable(row)) + "\n")
                    due = (cfg.checkpoint_every and (epoch + 1 - last_ck_epoch) >= cfg.checkpoint_every) or (
                        not cfg.checkpoint_every and time.perf_counter() - last_ck_time > 30)
                    if epoch + 1 == end_epoch or due or interrupt.requested:
                        self._checkpoint(epoch + 1, step, best, best_state, best_dirty, train_seconds)
                        best_dirty, last_ck_time, last_ck_epoch = False, time.perf_counter(), epoch + 1
                    progress.advance(row)
                    if strat.world_size > 1:  # rank 0 took the Ctrl-C: every process stops after this epoch
                        interrupt.requested = bool(strat.broadcast_object(interrupt.requested))
                    if interrupt.requested:
                        msg = (f"interrupted after epoch {epoch + 1}; checkpoint saved in {self.run_dir} (resume "
                               f"with {_RESUME})")
                        if strat.is_main:
                            sys.stderr.write(msg + "\n")
                        raise KeyboardInterrupt(msg)
        except KeyboardInterrupt:
            # the last epoch-boundary checkpoint stays valid: resume with resume=True / --resume
            raise

        done_epochs = max(end_epoch, start_epoch)
        finished = done_epochs >= cfg.epochs
        if not finished:
            return FitResult(metrics={"finished": False, "epoch": done_epochs}, model=model, log=self.log,
                             history=list(sym.history) if sym is not None else [],
                             run_dir=str(self.run_dir) if self.run_dir else None, finished=False)
        return self._finish(best, best_state, step, train_seconds, sym)

    def _check_output_shape(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """ModelError before the first step when the model's outputs do not have the targets' shape (the squared
        error would broadcast (B, 1) against (B, 9) silently, or fail with a bare torch error)."""
        model = self.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                y = call_model(model, xb)
        finally:
            model.train(was_training)
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(yb.shape):
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ModelError(f"the model returned {got} for a batch of {len(xb)} inputs, but the targets of task "
                             f"{self.task.name!r} have shape {tuple(yb.shape)} (rep_out {self.task.rep_out!r}); the "
                             "model's output must match the targets")

    def _fit_spawned(self) -> FitResult:
        """``fit()`` in ``config.world_size`` local processes; this trainer's model gets rank 0's parameters."""
        from .parallel import spawn_fit

        out = spawn_fit(self)
        self.model.load_state_dict(out["state"])
        sym = getattr(self.model, "symmetry", None)
        if sym is not None and hasattr(sym, "history"):
            sym.history = list(out["history"])
        self.log = list(out["log"])
        return FitResult(metrics=out["metrics"], model=self.model, log=self.log, history=list(out["history"]),
                         run_dir=out["run_dir"], finished=out["finished"])

    def _diverged(self, what: str, value: float, epoch: int, step: int, lr: float) -> None:
        where = (f" (with another run directory ({_RUN_DIR}), or {_OVERWRITE} to replace {self.run_dir})"
                 if self.run_dir is not None else "")
        raise ModelError(f"training diverged: the {what} is {value} in epoch {epoch + 1} (optimizer step {step}, "
                         f"lr {lr:g}); lower the learning rate (TrainConfig.lr / --lr) and start the run again{where}")

    def _finish(self, best, best_state, step, train_seconds, sym) -> FitResult:
        cfg, model = self.config, self.model
        final_strengths = [float(s) for s in sym.strengths] if sym is not None else None
        history = list(sym.history) if sym is not None else []
        if cfg.select == "val" and best_state is not None:
            model.load_state_dict(best_state)
        if not self.strategy.is_main:  # rank 0 evaluates and reports; the others hold the same model
            return FitResult(metrics={"finished": True, "rank": self.strategy.rank}, model=model, log=self.log,
                             history=history, run_dir=str(self.run_dir) if self.run_dir else None, finished=True)
        ev = self.evaluate(model)
        tuner_overhead = self.tuner.overhead_seconds if self.tuner is not None else 0.0
        step_time = self._step_seconds / max(self._steps_timed, 1)
        metrics = {
            "finished": True,
            "task": self.task.name,
            "model": getattr(model, "model_name", type(model).__name__),
            "tuner": self.tuner.name if self.tuner is not None else None,
            "seed": cfg.seed,
            "epochs": cfg.epochs,
            "steps": step,
            **{k: ev[k] for k in ("train_mse", "val_mse", "test_mse")},
            "equivariance": ev["equivariance"],
            "best_epoch": best["epoch"],
            "best_val_mse_during_training": best["val"] if best["epoch"] is not None else None,
            "n_parameters": int(getattr(model, "n_parameters", sum(p.numel() for p in model.parameters()))),
            "build_seconds": float(getattr(model, "build_seconds", 0.0)),
            "step_seconds": step_time,
            "train_seconds": train_seconds,
            "tuner_overhead_seconds": tuner_overhead,
            "tuner_overhead_fraction": tuner_overhead / max(train_seconds, 1e-12) if self.tuner is not None else 0.0,
        }
        if sym is not None:
            metrics["candidates"] = list(sym.names)
            metrics["strengths"] = dict(zip(sym.names, final_strengths))
            metrics["strengths_at_best"] = dict(zip(sym.names, best["strengths"])) if best.get("strengths") else None
            try:
                with torch.no_grad():
                    metrics["residuals"] = dict(zip(sym.names, [float(r) for r in model.residuals()]))
            except ModelError as exc:  # e.g. a Lie penalty on a model with no derivative rules in eval mode: the
                # finished run's metrics and checkpoint matter more than this summary figure
                import warnings

                warnings.warn(f"the final residuals could not be computed ({exc}); metrics['residuals'] is None",
                              UserWarning, stacklevel=2)
                metrics["residuals"] = None
            metrics["history"] = _jsonable(history)
        metrics = _jsonable(metrics)
        if self.run_dir is not None and self.strategy.is_main:
            _atomic_write_text(json.dumps(metrics, indent=2), self.run_dir / "metrics.json")
        return FitResult(metrics=metrics, model=model, log=self.log, history=history,
                         run_dir=str(self.run_dir) if self.run_dir else None, finished=True)


class _GracefulInterrupt:
    """During a run with a run directory, the first Ctrl-C (SIGINT) or SIGTERM only asks the loop to stop at the end
    of the current epoch, after writing a checkpoint there (so --resume loses nothing); a second one stops at once.

    SIGINT is taken over only when it has Python's default handler; SIGTERM (what schedulers and ``kill`` send; by
    default it ends the process without a checkpoint) only when it has the OS default handler and ``sigterm`` is
    set (single-process runs: a spawned process must keep dying on SIGTERM, which its parent uses to stop it).
    Without a run directory SIGTERM raises KeyboardInterrupt at once (nothing to save, but the process unwinds).
    Both are active only in the main thread, and the previous handlers come back on exit."""

    def __init__(self, enabled: bool, sigterm: bool = True):
        self.enabled, self.sigterm, self.requested = enabled, sigterm, False
        self._previous: Dict[int, Any] = {}

    def _handler(self, signum, frame):
        import signal

        name = signal.Signals(signum).name
        note_stop_signal(signum)
        if self.requested or not self.enabled:  # second signal (or nothing to save): stop now
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt(f"stopped by {name}")
        self.requested = True
        again = "press Ctrl-C" if signum == signal.SIGINT else "send SIGTERM"
        sys.stderr.write(f"\ninterrupt ({name}): finishing this epoch to save a checkpoint; {again} again to stop "
                         "now\n")

    def request(self, frame=None) -> None:
        """A stop request passed on by a parent process: the first stops after this epoch, a second at once."""
        if self.requested or not self.enabled:
            raise KeyboardInterrupt("stopped by the parent process")
        self.requested = True

    def __enter__(self):
        import signal
        import threading

        STOP_TARGETS.append(self)  # a spawned process's parent forwards interrupts to it (softsym.parallel)
        if take_pending_stop():
            self.requested = True
        if threading.current_thread() is not threading.main_thread():
            return self
        if self.enabled and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._handler)
        if self.sigterm and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc):
        import signal

        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
        if self in STOP_TARGETS:
            STOP_TARGETS.remove(self)
        return False


def _comparable(cfg: Dict) -> Dict:
    """A run config as compared between runs: without the softsym version and without the path a data file was
    given by (``--data d.npz`` and ``--data /abs/d.npz`` are the same data; its content hash decides), and without
    the tuner as asked for (``train.tuner``/``tuner_options``: None means the model's default): the top-level
    ``tuner`` entry, the tuner actually used with all its settings, decides."""
    out = {k: v for k, v in cfg.items() if k != "softsym"}
    if isinstance(out.get("train"), dict) and "tuner" in out:
        out["train"] = {k: v for k, v in out["train"].items() if k not in ("tuner", "tuner_options")}
    task = out.get("task")
    if isinstance(task, dict) and isinstance(task.get("info"), dict) and "sha256" in task["info"]:
        out["task"] = {**task, "info": {k: v for k, v in task["info"].items() if k != "source"}}
    return out


def _config_diff(old: Dict, new: Dict, prefix: str = "") -> str:
    diffs = []
    for k in sorted(set(old) | set(new)):
        if k == "softsym":
            continue
        a, b = old.get(k, "<missing>"), new.get(k, "<missing>")
        named = [isinstance(v, dict) and "name" in v for v in (a, b)]
        if any(named) and (a.get("name") if named[0] else a) != (b.get("name") if named[1] else b):
            # another kind altogether (e.g. the tuner): its name, not every setting
            diffs.append(f"{prefix}{k}: {(a['name'] if named[0] else a)!r} -> {(b['name'] if named[1] else b)!r}")
        elif isinstance(a, dict) and isinstance(b, dict):
            sub = _config_diff(a, b, prefix + k + ".")
            if sub:
                diffs.append(sub)
        elif a != b:
            diffs.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return "; ".join(diffs[:6])


class _Progress:
    """A rich progress bar over epochs (a no-op when disabled or when stderr is not a terminal)."""

    def __init__(self, enabled: Optional[bool], total: int, done: int, label: str):
        if enabled is None:
            enabled = sys.stderr.isatty() and "PYTEST_CURRENT_TEST" not in os.environ
        self.enabled, self.total, self.done, self.label = bool(enabled), total, done, label
        self._bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=True)
            self._bar.__enter__()
            self._id = self._bar.add_task(self.label, total=self.total, completed=self.done, info="")
        return self

    def advance(self, row: Dict) -> None:
        if self._bar is not None:
            info = f"loss {row['train_loss']:.3g}"
            if "val_mse" in row:
                info += f"  val {row['val_mse']:.3g}"
            self._bar.update(self._id, advance=1, info=info)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False
