"""Model factory for the benchmark tasks: ``build_model(name, task)``.

Names
-----
``mlp``            plain MLP (no symmetry)
``emlp``           exact EMLP for the task's full group (e.g. O(3) on Inertia)
``emlp:<group>``   exact EMLP for one group, e.g. ``emlp:O(2)@z`` (the "oracle" on MixedInertia o2z)
``rpp``            residual pathway prior (EMLP + MLP paths, RPP's prior as regularisation)
``per``            SoftEMLP over the task's candidate groups, strengths set by PER's heuristic tuner
``soft``           SoftEMLP over the task's candidate groups without the swish path (the strengths alone decide how
                   equivariant it is), penalties applied as proximal steps (``penalty="prox"``), strengths learned
                   by softsym's validation-test tuner (``SoftTuner``) in a pilot stage, after which the model
                   restarts from its initialisation with those strengths (two-stage fit, ``restart=True``).
                   The finite skeleton of every candidate (``Skeleton(O(3))`` = the axis flips Signs(3), see
                   :mod:`softsym.groups.skeleton`) joins the candidates unless ``skeletons=False``, so a finite
                   symmetry that survives when every continuous candidate breaks is found too.

Every model is wrapped in :class:`Standardized`, which applies the task's normalisation: the inner network sees
``x / x_scale`` and predicts ``(y - y_mean) / y_std``; the wrapper returns raw-scale predictions, so losses and
reported MSEs are on the raw targets (as EMLP reports them).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from .errors import ConfigError, ModelError, RepError, SoftsymError

if TYPE_CHECKING:
    from .data.synthetic import Task
    from .soft.symmetry import SoftSymmetry

__all__ = ["build_model", "Standardized", "MODEL_NAMES", "default_channels", "parse_model_name"]

MODEL_NAMES = ("mlp", "emlp", "emlp:<group>", "rpp", "per", "soft")

#: Default width per protocol: EMLP's experiments use 384 channels; PER's MixedInertia protocol uses 128 for every
#: model and 89 for RPP (two paths per layer, so roughly the same parameter count).
_DEFAULT_CH = {"emlp": {"default": 384, "rpp": 384}, "per": {"default": 128, "rpp": 89}}

#: Tuner each soft model trains with by default.
_DEFAULT_TUNER = {"per": "per", "soft": "soft"}


def parse_model_name(name: str) -> Tuple[str, Optional[str]]:
    """("kind", group spec or None) for a model name; unknown names raise ConfigError listing the valid ones."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"a model name must be a non-empty string; choose one of: {', '.join(MODEL_NAMES)}")
    text = name.strip()
    kind, sep, arg = text.partition(":")
    kind = kind.strip().lower()
    if kind == "emlp" and arg.strip():
        return "emlp", arg.strip()
    if kind == "emlp" and sep:
        raise ConfigError(f"model {name!r} names no group after 'emlp:'; give one, e.g. emlp:O(2)@z, or use plain "
                          "'emlp' for the task's full group")
    if sep or kind not in ("mlp", "emlp", "rpp", "per", "soft"):
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)} "
                          "(e.g. emlp:O(2)@z for an exact EMLP of one candidate group)")
    return kind, None


def default_channels(kind: str, task: Task) -> int:
    """Hidden channels of model ``kind`` when ``ch`` is not given: the paper's value for the task's protocol."""
    protocol = (getattr(task, "info", None) or {}).get("protocol", "emlp")
    table = _DEFAULT_CH.get(protocol, _DEFAULT_CH["emlp"])
    return table.get(kind, table["default"])


class Standardized(nn.Module):
    """Wrap a network with a task's normalisation: ``forward(x) = net(x / x_scale) * y_std + y_mean``.

    Attributes set by :func:`build_model`: ``model_name``, ``spec`` (how it was built), ``build_seconds``,
    ``tuner_name`` (default strength tuner, or None), ``full_group`` and ``candidates`` (group specs),
    ``rep_in`` / ``rep_out`` (rep strings). Soft models expose ``symmetry``, ``residuals()`` and
    ``layer_residuals()`` of the inner network; every model has ``regularization()`` and ``n_parameters``.
    Inputs of any floating dtype are cast to the model's (float32 unless ``.double()``), so ``model(task.x_test)``
    works on the float64 task data; the outputs are in the model's dtype. The bare nn models refuse other dtypes.
    """

    def __init__(self, net: nn.Module, x_scale: torch.Tensor, y_mean: torch.Tensor, y_std: torch.Tensor):
        super().__init__()
        self.net = net
        dtype = next((p.dtype for p in net.parameters()), torch.float32)
        self.register_buffer("x_scale", torch.as_tensor(x_scale).detach().clone().to(dtype))
        self.register_buffer("y_mean", torch.as_tensor(y_mean).detach().clone().to(dtype))
        self.register_buffer("y_std", torch.as_tensor(y_std).detach().clone().to(dtype))
        self.model_name: str = type(net).__name__
        self.spec: Dict = {}
        self.build_seconds: float = 0.0
        self.tuner_name: Optional[str] = None
        self.full_group: Optional[str] = None
        self.candidates: Sequence[str] = ()
        self.rep_in: Optional[str] = None
        self.rep_out: Optional[str] = None
        self.gated_wd: float = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw inputs (..., n_in) -> raw predictions (..., n_out): net(x / x_scale) * y_std + y_mean."""
        n_in = self.x_scale.numel()
        if x.dim() == 0 or x.shape[-1] != n_in:  # x / x_scale would broadcast (n, 1) or 0-d inputs silently
            raise RepError(f"{self.model_name} expects inputs with last dimension {n_in} (rep_in {self.rep_in}), "
                           f"got shape {tuple(x.shape)}")
        x = x.to(self.x_scale.dtype)
        return self.net(x / self.x_scale) * self.y_std + self.y_mean

    # ------------------------------------------------------------------ pass-through
    def regularization(self) -> torch.Tensor:
        """The network's regularizer (zero if it has none) plus ``gated_wd`` times the swish-path L2."""
        fn = getattr(self.net, "regularization", None)
        reg = self.x_scale.new_zeros(()) if fn is None else fn()
        if self.gated_wd:
            for name, p in self.net.named_parameters():
                if name.endswith("w_gated"):
                    reg = reg + self.gated_wd * (p ** 2).sum()
        return reg

    @property
    def symmetry(self) -> SoftSymmetry:
        """The inner soft model's :class:`~softsym.soft.SoftSymmetry`; AttributeError for exact models."""
        sym = getattr(self.net, "symmetry", None)
        if sym is None:
            raise AttributeError(f"{self.model_name} has no soft symmetry")
        return sym

    def proximal_step(self, lr: float) -> None:
        """Forward the trainer's post-step hook to the network (soft models with ``penalty="prox"``)."""
        fn = getattr(self.net, "proximal_step", None)
        if fn is not None:
            fn(lr)

    def proximal_gradient(self, lr: float) -> None:
        """Forward the trainer's pre-step hook to the network (soft models with ``penalty="prox"``)."""
        fn = getattr(self.net, "proximal_gradient", None)
        if fn is not None:
            fn(lr)

    def residuals(self) -> torch.Tensor:
        """The inner soft model's per-candidate residuals (J,); AttributeError for exact models."""
        fn = getattr(self.net, "residuals", None)
        if fn is None:
            raise AttributeError(f"{self.model_name} has no residuals (not a soft model)")
        return fn()

    def layer_residuals(self) -> torch.Tensor:
        """The inner soft model's per-layer residuals (L, J); AttributeError for exact models."""
        fn = getattr(self.net, "layer_residuals", None)
        if fn is None:
            raise AttributeError(f"{self.model_name} has no layer residuals (not a soft model)")
        return fn()

    @property
    def n_parameters(self) -> int:
        """Trainable parameters of the network (its own count when it has one)."""
        n = getattr(self.net, "n_parameters", None)
        if isinstance(n, int):
            return n
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def extra_repr(self) -> str:
        """Model name and parameter count, for ``repr(model)``."""
        return f"name={self.model_name!r}, params={self.n_parameters:,}"


def _check_reps(task, group_spec: str, what: str):
    """Bind the task's reps to ``group_spec`` and check their sizes against the data; returns (rep_in, rep_out)."""
    from .groups.parse import parse_group
    from .reps.algebra import rep as make_rep

    group = parse_group(group_spec)
    rin, rout = make_rep(task.rep_in, group), make_rep(task.rep_out, group)
    d_in, d_out = int(task.x_train.shape[1]), int(task.y_train.shape[1])
    if rin.size != d_in or rout.size != d_out:
        raise RepError(
            f"{what}: with group {group.name} (acting on R^{group.d}) the task's reps {task.rep_in} -> {task.rep_out} "
            f"have sizes {rin.size} -> {rout.size}, but task {task.name!r} has {d_in} inputs and {d_out} outputs; "
            f"use a group acting on the same space as {task.group} (e.g. one of {', '.join(task.candidates)})"
        )
    return group


def _canonical_candidates(candidates) -> tuple:
    """Candidate specs under their canonical names ("o(3)" -> "O(3)"; Groups pass through); a group listed twice
    (under any spelling) raises ConfigError."""
    from .groups.parse import canonical_spec, parse_group

    if isinstance(candidates, str):
        raise ConfigError(f"candidates must be a list of group specs, got the string {candidates!r}; "
                          f"wrap it in a list: [{candidates!r}]")
    if isinstance(candidates, (set, frozenset, dict)):
        why = ("a set's order changes from run to run (PYTHONHASHSEED)" if not isinstance(candidates, dict) else
               "the strengths are set by the model's tuner (or strengths=[...]), not by the dict's values")
        raise ConfigError(f"candidates must be a list of group specs, got a {type(candidates).__name__}; give a list: "
                          f"the order matters (strengths and metrics follow it) and {why}")
    out, keys = [], {}
    for c in candidates:
        key = parse_group(c).key
        if key in keys:
            raise ConfigError(f"candidate {c!r} is the same group as {keys[key]!r}; list every candidate once")
        keys[key] = c
        out.append(canonical_spec(c) if isinstance(c, str) else c)
    return tuple(out)


def build_model(name: str, task: Task, *, ch: Optional[int] = None, num_layers: int = 3,
                dtype: torch.dtype = torch.float32, seed: int = 0, **opts: Any) -> Standardized:
    """Build a model for ``task`` (a :class:`softsym.data.Task`) by name, initialised from ``seed``.

    Parameters
    ----------
    name : one of ``mlp``, ``emlp``, ``emlp:<group>``, ``rpp``, ``per``, ``soft``.
    ch : hidden channels (default: 384 on EMLP's tasks, 128 on MixedInertia (RPP: 89), as in PER).
    num_layers : hidden layers (EMLP's default 3; 0 gives one linear layer rep_in -> rep_out).
    dtype : parameter dtype (float32 for training; evaluation copies go to float64).
    seed : initialisation seed (the global torch RNG is left untouched).
    opts : passed to the network (e.g. ``basic_wd`` / ``equiv_wd`` for RPP, ``candidates`` or ``strengths``
           for per/soft), except ``gated_wd``: L2 weight (PER's code: 1.0) on the non-equivariant swish path
           ``w_gated`` of rpp / per / soft, added to ``regularization()``, and ``skeletons`` (per/soft; default
           True for soft, False for per, PER's own list): add each candidate's finite skeleton as a candidate.

    >>> from softsym.data import make_task
    >>> m = build_model("emlp", make_task("inertia", n_train=8, n_val=4, n_test=4), ch=16)  # doctest: +SKIP
    """
    from .data.synthetic import Task

    kind, group_arg = parse_model_name(name)
    if not isinstance(task, Task):
        raise ConfigError(f"build_model needs a Task from softsym.data.make_task, got {type(task).__name__}")
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 0:
        raise ConfigError(f"num_layers must be a non-negative integer (0: a single linear layer), got {num_layers!r}")
    if ch is None:
        ch = default_channels(kind, task)
    if not isinstance(ch, int) or isinstance(ch, bool) or ch < 1:
        raise ConfigError(f"ch must be a positive integer (hidden channels), got {ch!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ConfigError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    try:
        from . import nn as snn
    except ImportError as exc:  # pragma: no cover - only while softsym.nn is missing
        raise ModelError(f"softsym.nn is not available ({exc}); models cannot be built") from None

    full = task.group
    given = opts.pop("candidates", None)
    if given is not None and not isinstance(given, str) and hasattr(given, "__len__") and not len(given):
        raise ConfigError("candidates is empty; give at least one candidate group, or None for the task's "
                          f"candidates ({', '.join(map(str, task.candidates))})")
    candidates = _canonical_candidates(given if given is not None else task.candidates)
    skeletons = opts.pop("skeletons", kind == "soft")
    if not isinstance(skeletons, bool):
        raise ConfigError(f"skeletons must be True or False, got {skeletons!r}")
    if skeletons and kind not in ("per", "soft"):
        raise ConfigError(f"skeletons=True adds candidate groups, which only the soft models (per, soft) have; "
                          f"model {name!r} has none")
    gated_wd = float(opts.pop("gated_wd", 1.0 if kind in ("rpp", "per", "soft") else 0.0))  # PER's gated_wd
    group_spec = group_arg or full
    _check_reps(task, group_spec, f"model {name!r}")
    for c in candidates:
        _check_reps(task, c, f"candidate {c!r}")
    if skeletons:  # after the checks: a candidate on the wrong space fails at once, not after its skeleton
        from .groups.skeleton import skeleton_candidates

        candidates = candidates + tuple(spec for spec, _ in skeleton_candidates(candidates))
    label = f"emlp:{group_arg}" if group_arg else kind

    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            if kind == "mlp":
                net = snn.MLP(task.rep_in, task.rep_out, full, ch=ch, num_layers=num_layers, **opts)
            elif kind == "emlp":
                net = snn.EMLP(task.rep_in, task.rep_out, group_spec, ch=ch, num_layers=num_layers,
                               **{"seed": seed, **opts})
            elif kind == "rpp":
                net = snn.RPP(task.rep_in, task.rep_out, full, ch=ch, num_layers=num_layers, **{"seed": seed, **opts})
            elif kind == "per":  # PER's SoftEMLP: RPP's non-equivariant swish path in every nonlinearity
                net = snn.SoftEMLP(task.rep_in, task.rep_out, list(candidates), ch=ch, num_layers=num_layers,
                                   full_group=full, **{"seed": seed, **opts})
            else:  # soft: no swish path, so the strengths alone decide how equivariant the model is
                net = snn.SoftEMLP(task.rep_in, task.rep_out, list(candidates), ch=ch, num_layers=num_layers,
                                   full_group=full, **{"seed": seed, "swish_path": False, "penalty": "prox", **opts})
        except SoftsymError:
            raise
        except TypeError as exc:
            raise ConfigError(f"bad option for model {name!r}: {exc}") from None
        net = net.to(dtype)
        model = Standardized(net, task.x_scale, task.y_mean, task.y_std)
    model.build_seconds = time.perf_counter() - t0
    model.gated_wd = gated_wd
    model.model_name = label
    model.tuner_name = _DEFAULT_TUNER.get(kind)
    model.full_group = full
    model.candidates = candidates
    model.rep_in, model.rep_out = task.rep_in, task.rep_out
    model.spec = {"name": label, "task": task.name, "ch": ch, "num_layers": num_layers,
                  "dtype": str(dtype).replace("torch.", ""), "seed": seed,
                  "candidates": [c if isinstance(c, str) else getattr(c, "name", repr(c)) for c in candidates],
                  "skeletons": skeletons, "gated_wd": gated_wd, "penalty": getattr(net, "penalty", None),
                  "swish_path": kind in ("rpp", "per") or bool(opts.get("swish_path", False)),
                  "options": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
                              for k, v in opts.items()}}
    return model
