"""Matrix groups: classical Lie groups, finite groups, embeddings and products, and a string parser."""
from .base import Group
from .classical import GLPlus, Lorentz, O, O13, SL, SO, SO11p, SO13, SO13p, SU, Scaling, Sp
from .compose import DirectProduct, Embed
from .finite import C, D, FiniteGroup, PermutationGroup, RubiksCube, S, Signs, Trivial, Z
from .parse import GROUP_GRAMMAR, parse_group
from .skeleton import finite_skeleton, skeleton_candidates

__all__ = [
    "Group", "SO", "O", "SU", "SL", "GLPlus", "Sp", "Scaling", "O13", "SO13", "SO13p", "SO11p", "Lorentz",
    "Embed", "DirectProduct", "FiniteGroup", "PermutationGroup", "S", "Z", "C", "D", "Signs", "Trivial", "RubiksCube",
    "parse_group", "GROUP_GRAMMAR", "finite_skeleton", "skeleton_candidates",
]
