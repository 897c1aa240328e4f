"""Seeded synthetic benchmark tasks (no network): EMLP's O5Synthetic, Inertia, ParticleInteraction and PER's
MixedInertia variants.

Each task returns train / val / test splits in float64 plus the normalisation the original work used, expressed
so that it preserves equivariance: one input scale per tensor block (never per coordinate) and an output
mean/std that is applied only to invariant outputs. Reported MSE is always on the raw targets.

* ``o5synthetic`` (O(5), 2V -> V0): f = sin|x1| - |x2|^3 / 2 + x1.x2 / (|x1||x2|), x ~ N(0, I); inputs scaled by the
  RMS of each 5-vector, output standardised (EMLP).
* ``inertia`` (O(3), 5V0 + 5V -> V**2): masses softplus(N(0,1)), positions N(0, I); inertia tensor; no normalisation
  (EMLP's stats are 0, 1, 0, 1).
* ``particle-interaction`` (O(1,3), 4V -> V0): four-momenta N(0, I/16); EMLP's L_e : L_mu target; each four-vector
  scaled by EMLP's Xscale sqrt(mean |(p eta)_i p_i|) (the RMS of its components), output standardised (EMLP).
* ``mixed-inertia:<variant>`` (candidates O(3), O(2)@x, O(2)@y, O(2)@z): PER's MixedInertia,
  y = I (I3 + c e_a e_a^T) with I the inertia tensor: ``o3`` (c = 0: all four candidates are symmetries),
  ``o2x`` / ``o2y`` / ``o2z`` (c = -1: only O(2) about that axis survives), ``none``
  (y = I (I3 + c(-e_x e_x^T + e_y e_y^T)), c = -1: no candidate survives). ``c`` can be overridden in
  :func:`make_task` (PER's code also used a weaker modification, c = 0.3).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["Task", "make_task", "target_function", "TASKS", "MIXED_INERTIA_VARIANTS", "MIXED_INERTIA_C"]

MIXED_INERTIA_VARIANTS = ("o3", "o2x", "o2y", "o2z", "none")
TASKS = ("o5synthetic", "inertia", "particle-interaction") + tuple(f"mixed-inertia:{v}" for v in MIXED_INERTIA_VARIANTS)

#: Default split sizes: EMLP's protocol (val 1000, test 5000) and PER's for MixedInertia (1000/1000/1000).
DEFAULT_SPLITS = {"emlp": (1000, 1000, 5000), "per": (1000, 1000, 1000)}


@dataclass
class Task:
    """A regression task with symmetry metadata.

    ``x_scale`` (rep_in size) and ``y_mean`` / ``y_std`` (rep_out size) define the normalisation:
    model sees (x / x_scale) and predicts (y - y_mean) / y_std.
    """

    name: str
    group: str  # group spec of the full symmetry, e.g. "O(3)"
    rep_in: str
    rep_out: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_scale: torch.Tensor
    y_mean: torch.Tensor
    y_std: torch.Tensor
    candidates: Tuple[str, ...] = ()  # candidate groups for soft / mixed symmetry
    true_groups: Tuple[str, ...] = ()  # candidates that are exact symmetries of the data
    info: Dict = field(default_factory=dict)

    def __repr__(self) -> str:  # the dataclass default would print every tensor
        sizes = "/".join(str(len(t)) for t in (self.x_train, self.x_val, self.x_test))
        return (f"Task({self.name!r}, group={self.group!r}, {self.rep_in} -> {self.rep_out}, train/val/test {sizes}, "
                f"candidates={list(self.candidates)})")

    def splits(self) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
        """{"train" / "val" / "test": (x, y)} with the raw (unnormalised) tensors, to loop over the splits."""
        return {"train": (self.x_train, self.y_train), "val": (self.x_val, self.y_val),
                "test": (self.x_test, self.y_test)}


# ------------------------------------------------------------------ targets (raw x -> raw y), float64
def _o5_targets(x: np.ndarray) -> np.ndarray:
    """EMLP's O5Synthetic: f(x1, x2) = sin|x1| - |x2|^3 / 2 + x1.x2 / (|x1| |x2|), O(5)-invariant."""
    x1, x2 = x[:, :5], x[:, 5:]
    n1, n2 = np.linalg.norm(x1, axis=1), np.linalg.norm(x2, axis=1)
    y = np.sin(n1) - n2**3 / 2 + (x1 * x2).sum(1) / (n1 * n2)
    return y[:, None]


def _inertia_tensor(m: np.ndarray, r: np.ndarray) -> np.ndarray:
    r2 = (r**2).sum(-1)[..., None, None]
    return (m[..., None, None] * (r2 * np.eye(3) - r[..., :, None] * r[..., None, :])).sum(1)


def _inertia_targets(x: np.ndarray, k: int = 5) -> np.ndarray:
    """EMLP's Inertia: masses x[:, :k], positions x[:, k:] (k x 3); target sum_i m_i (|r_i|^2 I - r_i r_i^T)."""
    return _inertia_tensor(x[:, :k], x[:, k:].reshape(len(x), k, 3)).reshape(len(x), 9)


#: Default strength of the MixedInertia modification y = I (I3 + c e_a e_a^T) for the broken variants.
MIXED_INERTIA_C = -1.0


def _mixed_modifier(variant: str, c: float = MIXED_INERTIA_C) -> np.ndarray:
    """Right factor M of y = I M. Adding c (I e_a) e_a^T keeps O(2) about axis a (R e_a = e_a) and breaks
    O(3) and the other two O(2)s; "none" uses c(-e_x e_x^T + e_y e_y^T), which breaks all three O(2)s."""
    e = np.eye(3)
    if variant == "o3":
        return np.eye(3)
    if variant in ("o2x", "o2y", "o2z"):
        a = {"o2x": 0, "o2y": 1, "o2z": 2}[variant]
        return np.eye(3) + c * np.outer(e[a], e[a])
    return np.eye(3) + c * (np.outer(e[1], e[1]) - np.outer(e[0], e[0]))


def _mixed_inertia_targets(x: np.ndarray, variant: str, k: int = 5, c: float = MIXED_INERTIA_C) -> np.ndarray:
    inertia = _inertia_targets(x, k).reshape(len(x), 3, 3)
    return (inertia @ _mixed_modifier(variant, c)).reshape(len(x), 9)


_ETA = np.diag([1.0, -1.0, -1.0, -1.0])


def _dot(a, b):
    return np.einsum("ni,ij,nj->n", a, _ETA, b)


def _particle_targets(x: np.ndarray) -> np.ndarray:
    """EMLP's ParticleInteraction: 4 (L_e : L_mu) with L_e = p1 p3^T - (p1.p3 - p1.p1) eta and L_mu built from the
    lowered p2, p4; Lorentz (O(1,3)) invariant."""
    p1, p2, p3, p4 = (x[:, 4 * i:4 * i + 4] for i in range(4))
    le = p1[:, :, None] * p3[:, None, :] - (_dot(p1, p3) - _dot(p1, p1))[:, None, None] * _ETA
    ep2, ep4 = p2 @ _ETA, p4 @ _ETA
    lmu = ep2[:, :, None] * ep4[:, None, :] - (_dot(p2, p4) - _dot(p2, p2))[:, None, None] * _ETA
    y = 4 * (le * lmu).sum((1, 2))
    return y[:, None]


# ------------------------------------------------------------------ inputs (raw x), float64
def _gaussian_inputs(dim: int, scale: float = 1.0):
    return lambda n, rng: rng.standard_normal((n, dim)) * scale


def _inertia_inputs(n: int, rng: np.random.Generator, k: int = 5) -> np.ndarray:
    x = rng.standard_normal((n, 4 * k))
    x[:, :k] = np.logaddexp(0, x[:, :k])  # masses = softplus
    return x


def target_function(name: str, c: Optional[float] = None):
    """The exact target map of a task: a function raw x (n, d_in) -> raw y (n, d_out), numpy or torch float64.

    Used by the data tests (equivariance of the targets) and by anyone who wants noise-free targets for new inputs.
    ``c`` overrides the MixedInertia modification strength (default ``MIXED_INERTIA_C`` = -1).
    """
    key = _check_name(name)
    c = _check_c(key, c)
    if key == "o5synthetic":
        fn = _o5_targets
    elif key == "inertia":
        fn = _inertia_targets
    elif key == "particle-interaction":
        fn = _particle_targets
    else:
        variant = key.split(":", 1)[1]
        fn = lambda x: _mixed_inertia_targets(x, variant, c=c)  # noqa: E731

    def target(x):
        if isinstance(x, torch.Tensor):
            return torch.from_numpy(np.ascontiguousarray(fn(x.detach().cpu().double().numpy())))
        return fn(np.asarray(x, dtype=np.float64))

    return target


def _check_c(key: str, c: Optional[float]) -> float:
    if c is None:
        return MIXED_INERTIA_C
    if not key.startswith("mixed-inertia"):
        raise ConfigError(f"c (the MixedInertia modification strength) only applies to mixed-inertia tasks, not {key!r}")
    try:
        c = float(c)
    except (TypeError, ValueError):
        raise ConfigError(f"c must be a number, got {c!r}") from None
    if not np.isfinite(c) or c == 0.0:
        raise ConfigError(f"c must be finite and non-zero (c = 0 is the 'o3' variant), got {c}")
    return c


def _squash(name: str) -> str:
    """A task name without case, spaces, '-' and '_': EMLP's class names (ParticleInteraction) match ours."""
    return "".join(ch for ch in name.lower() if ch not in " -_")


def _check_name(name) -> str:
    """The canonical task name (one of TASKS) for ``name``, in any case and with or without '-' / '_'."""
    if not isinstance(name, str):
        raise ConfigError(f"a task name must be a string, got {type(name).__name__}; choose one of: {', '.join(TASKS)}")
    key = name.strip().lower()
    key = next((t for t in TASKS if _squash(t) == _squash(key)), key)
    if key not in TASKS:
        hint = ""
        if key.startswith("mixed-inertia") or key in MIXED_INERTIA_VARIANTS:
            hint = f" (MixedInertia variants: {', '.join('mixed-inertia:' + v for v in MIXED_INERTIA_VARIANTS)})"
        raise ConfigError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}{hint}")
    return key


# ------------------------------------------------------------------ normalisation
def _block_scale(x: np.ndarray, blocks) -> np.ndarray:
    """One scale per block of coordinates (never per coordinate, so equivariance is preserved).

    "rms": sqrt(mean of the block's squared entries) (EMLP's O5Synthetic, and its ParticleInteraction, whose
    sqrt(mean |(p eta)_i p_i|) is the same number since |eta_ii| = 1).
    """
    scale = np.ones(x.shape[1])
    for sl, kind in blocks:
        v = x[:, sl]
        if kind == "rms":
            scale[sl] = np.sqrt((v**2).mean())
    return scale


def make_task(name: str, n_train: int = 1000, n_val: Optional[int] = None, n_test: Optional[int] = None,
              seed: int = 0, c: Optional[float] = None) -> Task:
    """Generate a task's splits with a seed. Names: see TASKS ("inertia", "mixed-inertia:o2z", ...), in any case and
    with or without '-' / '_' (EMLP's class names O5Synthetic, Inertia, ParticleInteraction work too).
    ``c`` overrides the MixedInertia modification strength (default -1, as in PER's paper).

    >>> t = make_task("inertia", n_train=10, seed=0)
    >>> tuple(t.x_train.shape), tuple(t.y_train.shape)
    ((10, 20), (10, 9))
    """
    key = _check_name(name)
    c = _check_c(key, c)
    protocol = "per" if key.startswith("mixed-inertia") else "emlp"
    dv, dt = DEFAULT_SPLITS[protocol][1:]
    n_val = dv if n_val is None else n_val
    n_test = dt if n_test is None else n_test
    for v, label in ((n_train, "n_train"), (n_val, "n_val"), (n_test, "n_test")):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{label} must be a positive integer, got {v!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    # independent streams per split so that n_train does not change val/test
    rngs = [np.random.default_rng([seed, i, 7919]) for i in range(3)]
    sizes = (n_train, n_val, n_test)
    candidates: Tuple[str, ...] = ()
    true_groups: Tuple[str, ...] = ()
    if key == "o5synthetic":
        gen, group, rin, rout = _gaussian_inputs(10), "O(5)", "2V", "V0"
        blocks, standardise = [(slice(0, 5), "rms"), (slice(5, 10), "rms")], True
    elif key == "inertia":
        gen, group, rin, rout = _inertia_inputs, "O(3)", "5V0+5V", "V**2"
        blocks, standardise = [], False
    elif key == "particle-interaction":
        gen, group, rin, rout = _gaussian_inputs(16, 0.25), "O(1,3)", "4V", "V0"
        blocks, standardise = [(slice(4 * i, 4 * i + 4), "rms") for i in range(4)], True
    else:
        variant = key.split(":", 1)[1]
        gen, group, rin, rout = _inertia_inputs, "O(3)", "5V0+5V", "V**2"
        blocks, standardise = [], False
        candidates = ("O(3)", "O(2)@x", "O(2)@y", "O(2)@z")
        true_groups = {"o3": candidates, "o2x": ("O(2)@x",), "o2y": ("O(2)@y",), "o2z": ("O(2)@z",),
                       "none": ()}[variant]
    target = target_function(key, c=c if key.startswith("mixed-inertia") else None)
    xs = [gen(n, rng) for n, rng in zip(sizes, rngs)]
    data = [(x, target(x)) for x in xs]
    x_tr, y_tr = data[0]
    x_scale = _block_scale(x_tr, blocks)
    if standardise:  # only invariant (scalar) outputs are standardised, as in EMLP
        std = y_tr.std()  # 0 for a single training sample: keep the raw scale rather than zeroing predictions
        y_mean, y_std = np.full(y_tr.shape[1], y_tr.mean()), np.full(y_tr.shape[1], std if std > 0 else 1.0)
    else:
        y_mean, y_std = np.zeros(y_tr.shape[1]), np.ones(y_tr.shape[1])
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
    return Task(
        name=key, group=group, rep_in=rin, rep_out=rout,
        x_train=t(x_tr), y_train=t(y_tr), x_val=t(data[1][0]), y_val=t(data[1][1]),
        x_test=t(data[2][0]), y_test=t(data[2][1]),
        x_scale=t(x_scale), y_mean=t(y_mean), y_std=t(y_std),
        candidates=candidates or (group,), true_groups=true_groups or ((group,) if not candidates else ()),
        info={"seed": seed, "protocol": protocol, "sizes": sizes,
              **({"c": c} if key.startswith("mixed-inertia") else {})},
    )
