"""Small helpers shared by the nn layers: rep binding and checks, per-block bases, exact float64 buffers."""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ModelError, RepError
from ..groups.base import Group
from ..groups.parse import parse_group
from ..reps.algebra import parse_rep
from ..reps.base import DUAL, Leaf, ProdRep, Rep, V0
from ..reps.basis import equivariant_basis
from ..reps.block import canonical_atoms

__all__ = [
    "plain_autograd", "use_plain_autograd", "first_order_backward", "as_group", "bind_rep", "as_unbound_rep", "check_real_group", "block_basis", "copy_table", "ExactBuffers",
    "factory_kwargs", "atoms_rep",
]


def as_group(group, what: str = "group") -> Group:
    if group is None:
        raise ConfigError(f"{what} is required (a Group or a spec such as 'O(3)')")
    return parse_group(group)


def check_real_group(group: Group) -> Group:
    """Layers use real parameters; complex groups (SU(n)) would need complex weights."""
    if group.is_complex:
        raise ModelError(
            f"{group.name} has complex generators; softsym.nn layers use real weights and support real groups only"
        )
    return group


def bind_rep(spec, group=None, what: str = "rep") -> Rep:
    """A Rep (or rep string) bound to ``group``; a rep already bound to another group is an error."""
    if isinstance(spec, Rep):
        rep = spec
    elif isinstance(spec, str):
        rep = parse_rep(spec)
    else:
        raise RepError(f"{what} must be a Rep or a rep string such as '5V0+5V', got {type(spec).__name__}")
    if group is None:
        if rep.group is None:
            raise RepError(f"{what} {rep!r} is not bound to a group: bind it (rep(G)) or pass group=")
        return rep
    g = parse_group(group)
    if rep.group is not None and rep.group != g:
        raise RepError(
            f"{what} {rep!r} is bound to {rep.group.name}, but the layer/model is built for {g.name}; "
            "build the rep unbound (e.g. from a string) or bind it to the same group"
        )
    return rep.bind(g)


_PLAIN = threading.local()


@contextlib.contextmanager
def plain_autograd() -> Iterator[None]:
    """Inside this block softsym's layers use plain differentiable torch ops instead of their hand-written autograd
    kernels (which are faster but first-order only): needed for double backward (e.g. a Lie-derivative penalty
    computed by reverse mode twice). ``torch.func`` transforms (jvp, vmap, jacrev, ...) switch it on by themselves."""
    _PLAIN.depth = getattr(_PLAIN, "depth", 0) + 1
    try:
        yield
    finally:
        _PLAIN.depth -= 1


def first_order_backward(layer: str):
    """Decorator for the hand-written backward of a custom autograd Function: first derivatives only.

    torch's ``once_differentiable`` raises only when the incoming gradient itself needs a gradient; otherwise (e.g.
    ``autograd.functional.hessian``, ``gradgradcheck``, gradient penalties w.r.t. inputs) the second-order terms
    silently come out as zero. Here any backward taken with ``create_graph=True`` raises a ModelError instead."""
    def wrap(backward):
        inner = torch.autograd.function.once_differentiable(backward)

        @functools.wraps(backward)
        def checked(ctx, *grads):
            if torch.is_grad_enabled():  # backward(create_graph=True): a second derivative will be taken
                raise ModelError(
                    f"{layer}: its fast kernel has first derivatives only, and a second derivative (create_graph=True: "
                    "Hessians, gradient penalties, gradgradcheck) was asked for; run the model inside "
                    "`with softsym.nn.plain_autograd():` (plain differentiable torch ops) or use torch.func")
            return inner(ctx, *grads)
        return checked
    return wrap


def use_plain_autograd(t: torch.Tensor) -> bool:
    """True inside :func:`plain_autograd` or when ``t`` is wrapped by a torch.func transform (forward-mode AD,
    vmap, functional grad), which custom autograd Functions without ``setup_context`` / ``jvp`` do not support."""
    if getattr(_PLAIN, "depth", 0) > 0:
        return True
    try:
        return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))
    except AttributeError:  # pragma: no cover - torch without functorch internals
        return False


def as_unbound_rep(spec, what: str = "rep") -> Rep:
    """An unbound rep expression (needed when one rep is re-bound to several candidate groups)."""
    if isinstance(spec, str):
        return parse_rep(spec)
    if isinstance(spec, Rep):
        return spec.unbound()  # a bound rep contributes its expression only: it is re-bound to every candidate
    raise RepError(f"{what} must be a Rep or a rep string such as '5V0+5V', got {type(spec).__name__}")


def atoms_rep(group: Group, atoms: Tuple[int, ...]) -> Rep:
    """The single tensor block V^(x)..(x)V* with these atoms, bound to ``group``."""
    if not atoms:
        return V0.bind(group)
    return ProdRep.of([Leaf("V*" if a == DUAL else "V", group) for a in atoms])


_BLOCK_CACHE: Dict[tuple, np.ndarray] = {}


def block_basis(group: Group, atoms: Tuple[int, ...]) -> np.ndarray:
    """Orthonormal invariant basis (s, r), float64, of one tensor block (through the solver's disk cache)."""
    catoms = canonical_atoms(group, tuple(int(a) for a in atoms))
    key = (group.key, catoms)
    q = _BLOCK_CACHE.get(key)
    if q is None:
        basis = equivariant_basis(atoms_rep(group, catoms))
        q = np.ascontiguousarray(basis.dense().numpy(), dtype=np.float64)
        q.setflags(write=False)
        if len(_BLOCK_CACHE) > 4096:
            _BLOCK_CACHE.pop(next(iter(_BLOCK_CACHE)))
        _BLOCK_CACHE[key] = q
    return q


def copy_table(rep: Rep) -> Tuple[np.ndarray, np.ndarray, list]:
    """Pure-tensor copies of a bound rep.

    Returns ``copy_of`` (n,) copy id of every coordinate, ``copy_size`` (n_copies,) and the list of
    (component, first copy id) in component order (copy ids run placement by placement within a component).
    """
    n = rep.size
    copy_of = np.empty(n, np.int64)
    sizes, comps, cid = [], [], 0
    for comp in rep.components:
        idx = comp.indices()
        copy_of[idx] = (cid + np.arange(comp.count))[:, None]
        sizes.extend([comp.block_size] * comp.count)
        comps.append((comp, cid))
        cid += comp.count
    return copy_of, np.asarray(sizes, np.int64), comps


def factory_kwargs(dtype=None, device=None) -> dict:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ConfigError(f"dtype must be a floating torch dtype such as torch.float64, got {dtype!r}")
    if device is None:
        return {"dtype": dtype, "device": torch.device("cpu")}
    try:
        dev = torch.device(device)
        torch.empty(0, device=dev)  # an unknown or unavailable device (e.g. "cuda" on a CPU-only build) fails here
    except (RuntimeError, AssertionError, TypeError, ValueError) as exc:
        raise ConfigError(f"device {device!r} is not usable here ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                          "use 'cpu' or an available accelerator such as 'cuda:0'") from None
    return {"dtype": dtype, "device": dev}


#: Relative size below which entries of a constant basis / projection matrix are round-off and become exact zeros
SNAP_TOL = 1e-13


class ExactBuffers(nn.Module):
    """A module whose constant buffers (basis matrices, index tables) are numpy masters mirrored in non-persistent
    buffers.

    ``.double()`` after ``.float()`` would otherwise keep float32-rounded bases (equivariance only to ~1e-7), and
    ``to_empty()`` after a build on the "meta" device would leave the index tables as uninitialised memory (they are
    not in the state dict, so ``load_state_dict`` cannot restore them); here every dtype / device change rebuilds
    the buffers from the masters (floating ones in the module's dtype, index tables as int64).
    """

    def __init__(self) -> None:
        super().__init__()
        self._exact_masters: Dict[str, np.ndarray] = {}

    def register_exact(self, name: str, array: np.ndarray, dtype: torch.dtype, device) -> None:
        """A constant float buffer (a basis or projection matrix) kept in float64 across dtype / device changes.

        Entries at round-off level (below SNAP_TOL x the largest) are set to exact zeros: a solver's 1e-20 left
        in a basis turns weights into float32 denormals (below 1.2e-38), and CPU arithmetic on denormals is up to
        100x slower (an O(5) EMLP training step took 3.3x as long; JAX/XLA flushes them, torch does not)."""
        master = np.array(array, dtype=np.float64, order="C", copy=True)
        if master.size:
            scale = float(np.abs(master).max())
            master[np.abs(master) < SNAP_TOL * scale] = 0.0
        self._exact_masters[name] = master
        self.register_buffer(name, torch.as_tensor(master, dtype=dtype, device=device), persistent=False)

    def register_index(self, name: str, array: np.ndarray, device) -> None:
        """An int64 index table (gathers, positions) kept across dtype / device changes and ``to_empty``."""
        master = np.array(array, dtype=np.int64, order="C", copy=True)
        self._exact_masters[name] = master
        self.register_buffer(name, torch.as_tensor(master, device=device), persistent=False)

    def _apply(self, fn, *args, **kwargs):  # noqa: D401 - torch hook
        out = super()._apply(fn, *args, **kwargs)
        for name, master in self._exact_masters.items():
            cur = self._buffers.get(name)
            if cur is None or cur.device.type == "meta":
                continue
            if master.dtype == np.int64:
                self._buffers[name] = torch.as_tensor(master, device=cur.device)
            elif cur.is_floating_point():
                self._buffers[name] = torch.as_tensor(master, dtype=cur.dtype, device=cur.device)
        return out


def check_same_d(groups: Sequence[Group], what: str = "candidate groups") -> int:
    ds = {g.d for g in groups}
    if len(ds) != 1:
        raise ConfigError(
            f"all {what} must act on the same R^d, got " + ", ".join(f"{g.name}: d={g.d}" for g in groups)
        )
    return ds.pop()


def zero_scalar(module: nn.Module) -> torch.Tensor:
    for p in module.parameters():
        return p.new_zeros(())
    return torch.zeros(())


def as_seed(seed: Optional[int]) -> int:
    if seed is None:
        return 0
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)
