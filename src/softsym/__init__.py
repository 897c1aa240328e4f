"""softsym: exact, soft and mixed symmetries for PyTorch models.

>>> import softsym
>>> G = softsym.group("O(3)")
>>> softsym.equivariant_basis(softsym.Hom(softsym.V(G)**2, softsym.V(G)**2)).dim
3
"""
from __future__ import annotations

from typing import Optional, Union

from . import defaults
from .errors import (
    BasisTooLargeError,
    CacheError,
    ConfigError,
    DataError,
    GroupError,
    ModelError,
    RepError,
    RepParseError,
    SoftsymError,
    SolverError,
)
from .groups import (
    C, D, DirectProduct, Embed, FiniteGroup, GLPlus, Group, Lorentz, O, O13, PermutationGroup, S, SL, SO,
    SO11p, SO13, SO13p, SU, RubiksCube, Scaling, Signs, Sp, Trivial, Z, finite_skeleton, parse_group,
)
from .reps import (
    Basis, Hom, Projector, Rep, Scalar, T, V, V0, Vdual, equivariant_basis, parse_rep,
)
from .reps import rep as _rep
from . import metrics, nn, soft, wrappers
from .check import CheckReport, check
from .metrics import (
    EquivarianceResult, LieDerivativeResult, equivariance_error, lie_derivative_error, subspace_energy,
)
from .nn import (
    EMLP, MLP, RPP, BiLinear, EMLPBlock, EquivariantLinear, GatedNonlinearity, RPPLinear, SoftEMLP, gated,
    uniform_rep,
)
from .soft import SoftSymmetry
from .soft.tuning import PERTuner, SoftTuner
from .data import TASKS, Task, load_task, make_task, task_from_arrays
from .models import build_model
from .train import Trainer, TrainConfig
from .report import symmetry_report
from .wrappers import Canonicalize, FrameAverage, GroupAverage, SortCanonicalize

__version__ = "0.1.0"


def group(spec: Union[str, Group]) -> Group:
    """Parse a group spec ("O(3)", "SO(1,3)", "O(2)@z", "S(5)", "D(6)") or pass a Group through."""
    return parse_group(spec)


def rep(spec: Union[str, Rep], group: Optional[Union[str, Group]] = None) -> Rep:
    """Build a rep from a string such as "5V0+5V" and bind it to ``group`` (Group or spec) when given."""
    return _rep(spec, group)


__all__ = [
    "group", "rep", "Hom", "T", "V", "V0", "Vdual", "Scalar", "equivariant_basis", "Basis", "Projector",
    "Rep", "Group", "parse_group", "parse_rep", "defaults",
    "SO", "O", "SU", "SL", "GLPlus", "Sp", "Scaling", "O13", "SO13", "SO13p", "SO11p", "Lorentz",
    "S", "Z", "C", "D", "Signs", "Trivial", "finite_skeleton", "FiniteGroup", "PermutationGroup", "Embed", "DirectProduct",
    "SoftsymError", "GroupError", "RepError", "RepParseError", "SolverError", "BasisTooLargeError",
    "CacheError", "ConfigError", "DataError", "ModelError", "__version__",
    "metrics", "nn", "soft", "wrappers", "check", "CheckReport",
    "EquivarianceResult", "LieDerivativeResult", "equivariance_error", "lie_derivative_error", "subspace_energy",
    "EMLP", "MLP", "RPP", "SoftEMLP", "EquivariantLinear", "BiLinear", "GatedNonlinearity", "EMLPBlock",
    "RPPLinear", "uniform_rep", "gated", "SoftSymmetry",
    "GroupAverage", "FrameAverage", "Canonicalize", "SortCanonicalize", "RubiksCube",
    "PERTuner", "SoftTuner", "TASKS", "Task", "make_task", "load_task", "task_from_arrays", "build_model", "Trainer", "TrainConfig",
    "symmetry_report",
]
