"""SoftSymmetry: a set of candidate groups, each with its own strength lambda_j >= 0.

Every soft-symmetry mechanism in softsym (projection penalties on linear layers, sampled function-level
penalties, Lie-derivative penalties) produces one *residual* R_j per candidate group; the training loss adds
``sum_j lambda_j R_j``. Tuners (:mod:`softsym.soft.tuning`) change the strengths and record their trajectory.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import ConfigError
from ..groups.base import Group
from ..groups.parse import parse_group

__all__ = ["SoftSymmetry", "DEFAULT_STRENGTHS", "as_symmetry"]


class _DefaultStrengths:
    """Marks ``strengths`` as not given: 1.0 for every candidate, or a dict's values (and a dict plus explicit
    strengths can be refused). A marker rather than None, which stays an invalid strength."""

    def __repr__(self) -> str:
        return "1.0"


DEFAULT_STRENGTHS = _DefaultStrengths()


def _as_strengths(values) -> torch.Tensor:
    """Strengths as a float64 tensor; ConfigError for non-numeric values."""
    if isinstance(values, bool) or (isinstance(values, (list, tuple)) and any(isinstance(v, bool) for v in values)):
        raise ConfigError(f"strengths must be numbers, not True/False, got {values!r}")
    try:
        if isinstance(values, torch.Tensor):
            if values.dtype == torch.bool:
                raise ConfigError(f"strengths must be numbers, not a bool tensor, got {values.tolist()}")
            return values.detach().to(device="cpu", dtype=torch.float64)
        return torch.as_tensor(values, dtype=torch.float64, device="cpu")  # not an ambient torch.device("meta")
    except ConfigError:
        raise
    except Exception:
        raise ConfigError(f"strengths must be a float or a list of floats (one per candidate), got {values!r}") from None


def _candidate_specs(groups, strengths):
    """(list of candidate specs, strengths) from a spec / Group, a list or tuple of them, or a dict
    {spec: strength}. Sets are refused: strengths, residuals and names are matched to candidates by position."""
    if isinstance(groups, (str, Group)):
        return [groups], strengths
    if isinstance(groups, (set, frozenset)):
        raise ConfigError(f"candidate groups were given as a {type(groups).__name__} {sorted(map(str, groups))}; give "
                          "a list: the order matters (strengths, residuals and names are matched to the candidates by "
                          "position) and a set's order changes from run to run (PYTHONHASHSEED)")
    if isinstance(groups, dict):
        if strengths is not DEFAULT_STRENGTHS:
            raise ConfigError("candidate groups were given as a dict {spec: strength} and strengths= was given too; "
                              "give the strengths once: either as the dict's values or as a list of candidates with "
                              "strengths=")
        return list(groups), list(groups.values())
    if groups is None or not hasattr(groups, "__iter__"):
        raise ConfigError(f"candidate groups must be a group spec, a Group or a list of them (e.g. ['O(3)', "
                          f"'O(2)@z']), got {type(groups).__name__}")
    return list(groups), strengths


class SoftSymmetry(nn.Module):
    """Candidate groups with strengths.

    Parameters
    ----------
    groups : list (or tuple) of Group or spec strings, e.g. ["O(3)", "O(2)@x", "O(2)@y", "O(2)@z"]; or a dict
        {spec: strength}, e.g. {"O(3)": 0.0, "O(2)@z": 10.0}. Sets are refused (their order is not reproducible).
    strengths : initial lambda_j (a float for all, or one per group); default 1.0 (or the dict's values).
    names : display names (default: the group names).

    The strengths live in the buffer ``strengths`` (float64, moves with ``.to(device)``, saved in state_dict).
    ``history`` holds one dict per tuner update: {"step": int, "strengths": [...], "residuals": [...]}.
    """

    def __init__(self, groups: Union[Sequence, Dict], strengths=DEFAULT_STRENGTHS, *,
                 names: Optional[Sequence[str]] = None):
        super().__init__()
        groups, strengths = _candidate_specs(groups, strengths)
        strengths = 1.0 if strengths is DEFAULT_STRENGTHS else strengths
        self.groups: List[Group] = [parse_group(g) for g in groups]
        if not self.groups:
            raise ConfigError("SoftSymmetry needs at least one candidate group")
        self.names: List[str] = list(names) if names is not None else [g.name for g in self.groups]
        if len(self.names) != len(self.groups):
            raise ConfigError(f"{len(self.names)} names given for {len(self.groups)} groups")
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"candidate names must be unique, got {self.names}")
        lam = _as_strengths(strengths)
        if lam.ndim == 0:
            lam = lam.repeat(len(self.groups))
        if lam.shape != (len(self.groups),):
            raise ConfigError(f"strengths must be a float or {len(self.groups)} values, got shape {tuple(lam.shape)}")
        if torch.any(lam < 0) or not torch.all(torch.isfinite(lam)):
            raise ConfigError(f"strengths must be finite and non-negative, got {lam.tolist()}")
        self.register_buffer("strengths", lam.clone())
        self.history: List[Dict] = []
        self.register_load_state_dict_post_hook(SoftSymmetry._check_loaded)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, name) -> float:
        """The strength of one candidate, by name (``sym["O(3)"]``, any spelling of the group) or index."""
        return float(self.strengths[self.index(name)])

    def __iter__(self):
        """The candidates' names, in order (``sym[name]`` is a strength, as in a dict)."""
        return iter(list(self.names))

    def strength(self, name) -> float:
        """The strength of one candidate, by name or index (as ``sym[name]``)."""
        return self[name]

    def index(self, name) -> int:
        """Position of a candidate given by its name, any spelling of its group, a Group, or an index."""
        if isinstance(name, (int,)) and not isinstance(name, bool):
            if not -len(self.groups) <= name < len(self.groups):
                raise ConfigError(f"candidate index {name} out of range for {len(self.groups)} candidates")
            return name % len(self.groups)
        if isinstance(name, str) and name in self.names:
            return self.names.index(name)
        try:
            key = parse_group(name).key
        except Exception:  # noqa: BLE001  (not a group spec at all: the message below lists the names)
            key = None
        for j, g in enumerate(self.groups):
            if key is not None and g.key == key:
                return j
        raise ConfigError(f"unknown candidate {name!r}; candidates: {self.names}")

    def penalty(self, residuals: torch.Tensor) -> torch.Tensor:
        """sum_j lambda_j R_j for residuals of shape (J,), summed in float64 (a float32 cast of a large strength
        would be inf, and inf * 0 = NaN) and returned in the residuals' dtype."""
        if not isinstance(residuals, torch.Tensor):
            raise ConfigError(f"penalty() needs a tensor of {len(self.groups)} residuals (one per candidate), got "
                              f"{type(residuals).__name__}")
        if residuals.ndim == 0 or residuals.shape[-1] != len(self.groups):
            raise ConfigError(f"expected {len(self.groups)} residuals (one per candidate), got {tuple(residuals.shape)}")
        if not residuals.is_floating_point() or residuals.dtype == torch.float64:
            return (self.strengths.to(residuals.device, torch.float64) * residuals).sum(-1)
        lam = self.strengths.to(residuals.device, torch.float64)
        return (lam * residuals.to(torch.float64)).sum(-1).to(residuals.dtype)

    # the candidates' names travel with the state dict, so strengths are never loaded into the wrong candidates
    def get_extra_state(self) -> torch.Tensor:
        """The candidates' names, as UTF-8 JSON bytes in a uint8 tensor (every state-dict entry stays a tensor)."""
        return torch.tensor(list(json.dumps(list(self.names)).encode()), dtype=torch.uint8)

    def set_extra_state(self, state) -> None:
        names = None
        if isinstance(state, torch.Tensor) and state.numel():
            names = json.loads(bytes(state.tolist()).decode())
        elif isinstance(state, dict) and "names" in state:
            names = state["names"]
        self._loaded_names = list(names) if names is not None else None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "strengths"
        value = state_dict.get(key)
        if isinstance(value, torch.Tensor) and value.shape != self.strengths.shape:
            raise ConfigError(f"the state dict holds {tuple(value.shape)} strengths ({key}) but this SoftSymmetry has "
                              f"{len(self.groups)} candidates {self.names}; load a state dict saved with the same "
                              "candidates")
        if isinstance(value, torch.Tensor) and value.device.type != "meta" and (
                bool(torch.any(value < 0)) or not bool(torch.all(torch.isfinite(value)))):
            raise ConfigError(f"the state dict's strengths {value.tolist()} are not all finite and non-negative")
        extra = state_dict.get(prefix + "_extra_state")
        if extra is not None:  # checked before anything is written: a refused load leaves the module as it was
            self.set_extra_state(extra)
            names = self.__dict__.get("_loaded_names")
            if names is not None and self._order_of(names) is None:
                self.__dict__.pop("_loaded_names", None)
                raise ConfigError(f"the state dict's strengths are for candidates {names} but this SoftSymmetry has "
                                  f"{self.names}; load a state dict saved with the same candidates")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if prefix + "_extra_state" in missing_keys:  # saved before the names were: strengths load by position
            missing_keys.remove(prefix + "_extra_state")

    def _order_of(self, names: List[str]) -> Optional[List[int]]:
        """For each of this module's candidates, its position in ``names`` (matched by name, else by group: "O(2)@z"
        and "O(2)@[0,1]:3" are one candidate), or None when the two lists are not the same candidates."""
        if len(names) != len(self.names):
            return None
        order = []
        for j, own in enumerate(self.names):
            if own in names:
                order.append(names.index(own))
                continue
            try:
                key = parse_group(self.groups[j]).key
                hits = [i for i, n in enumerate(names) if parse_group(n).key == key]
            except Exception:  # noqa: BLE001  (a custom display name that is no group spec)
                hits = []
            if len(hits) != 1:
                return None
            order.append(hits[0])
        return order if sorted(order) == list(range(len(names))) else None

    @staticmethod
    def _check_loaded(module: "SoftSymmetry", incompatible) -> None:
        """After load_state_dict (names and values were checked before it wrote): follow the candidates' order."""
        names = module.__dict__.pop("_loaded_names", None)
        if names is None or names == module.names:
            return
        order = module._order_of(names)
        lam = module.strengths
        with torch.no_grad():
            lam.copy_(lam[torch.tensor(order, device=lam.device)])

    def _apply(self, fn, *args, **kwargs):
        """Move the strengths with the module (``.to(device)``) but keep them float64: ``model.half()`` would turn a
        strength of 1e5 into inf and 1e-8 into 0."""
        keep = self.strengths
        super()._apply(fn, *args, **kwargs)
        if self.strengths.dtype != torch.float64:
            self.strengths = keep.to(device=self.strengths.device, dtype=torch.float64)
        return self

    def set_strengths(self, values) -> None:
        """Set every lambda_j: one value per candidate, a single number for all of them, or a dict {name: value}
        for some of them (the others keep theirs)."""
        if isinstance(values, dict):
            v = self.strengths.detach().clone().cpu()
            for name, val in values.items():
                one = _as_strengths(val)
                if one.ndim != 0:
                    raise ConfigError(f"strength of {name!r} must be one number, got {val!r}")
                v[self.index(name)] = one
            values = v
        v = _as_strengths(values).to(self.strengths.device)
        if v.ndim == 0:
            v = v.expand_as(self.strengths)
        if v.shape != self.strengths.shape or torch.any(v < 0) or not torch.all(torch.isfinite(v)):
            raise ConfigError(f"strengths must be {len(self.groups)} finite non-negative values, got {v.tolist()}")
        self.strengths.copy_(v)

    def record(self, step: int, residuals=None, **extra) -> None:
        """Append the current strengths (and residuals) to ``history``."""
        entry = {"step": int(step), "strengths": [float(x) for x in self.strengths]}
        if residuals is not None:
            entry["residuals"] = [float(x) for x in torch.as_tensor(residuals).detach().flatten()]
        entry.update(extra)
        self.history.append(entry)

    def as_dict(self) -> Dict[str, float]:
        """{candidate name: strength}, as plain floats."""
        return {n: float(s) for n, s in zip(self.names, self.strengths)}

    def extra_repr(self) -> str:
        return ", ".join(f"{n}: {float(s):.3g}" for n, s in zip(self.names, self.strengths))


def as_symmetry(symmetry, who: str) -> SoftSymmetry:
    """``symmetry`` itself if it is a SoftSymmetry, else ``SoftSymmetry(symmetry)`` for a group spec, a Group, a
    list of them or a dict {spec: strength} (so penalties accept ``["O(3)", "O(2)@z"]`` directly)."""
    if isinstance(symmetry, SoftSymmetry):
        return symmetry
    if isinstance(symmetry, (str, Group, list, tuple, dict, set, frozenset)):
        return SoftSymmetry(symmetry)  # (a set is refused there, with the reason)
    raise ConfigError(f"{who} needs a SoftSymmetry or candidate groups (e.g. ['O(3)', 'O(2)@z']), got "
                      f"{type(symmetry).__name__}")
