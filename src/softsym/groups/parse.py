"""String specs for groups, as used by the CLI and config files.

Grammar (whitespace ignored)::

    spec    := factor ('*' factor)*            direct product (Kronecker action), also '×'
    factor  := atom ('@' where)*
    atom    := base | '(' spec ')'             brackets nest, e.g. "(O(2)*S(2))@[0,1,2,3]:5"
             | 'Skeleton(' spec ')'            its finite skeleton: discrete generators and the half-turns
                                               of its Lie generators, e.g. "Skeleton(O(3))" = Signs(3)
    where   := 'x' | 'y' | 'z'                 a 2-d group about that axis of R^3, e.g. "O(2)@z"
             | '[' i, j, ... ']' [':' d]       acting on those coordinates of R^d, e.g. "SO(3)@[1,2,3]:4"
    base    := SO(n) | O(n) | SU(n) | SL(n) | GL+(n) | Sp(2m) | Scaling(n)
             | O(1,3) | Lorentz | SO(1,3) | SO+(1,3) | SO+(1,1)
             | S(n) | Z(n) | C(k) | D(k) | Signs(n) | Trivial(n) | RubiksCube
"""
from __future__ import annotations

import re
from typing import Callable, Dict, Union

from ..errors import GroupError
from .base import Group
from .classical import GLPlus, O, O13, SL, SO, SO11p, SO13, SO13p, SU, Scaling, Sp
from .compose import Embed
from .finite import C, D, RubiksCube, S, Signs, Trivial, Z

__all__ = ["parse_group", "canonical_spec", "GROUP_GRAMMAR", "GROUP_NAMES"]

GROUP_GRAMMAR = __doc__.split("Grammar (whitespace ignored)::", 1)[1].strip("\n")

_ONE_ARG: Dict[str, Callable[[int], Group]] = {
    "SO": SO, "O": O, "SU": SU, "SL": SL, "GL+": GLPlus, "GLPLUS": GLPlus, "SP": Sp, "SCALING": Scaling,
    "S": S, "Z": Z, "C": C, "D": D, "SIGNS": Signs, "TRIVIAL": Trivial,
}
_FIXED: Dict[str, Callable[[], Group]] = {
    "O(1,3)": O13, "LORENTZ": O13, "SO(1,3)": SO13, "SO+(1,3)": SO13p, "SO+(1,1)": SO11p,
    "RUBIKSCUBE": RubiksCube, "RUBIKS": RubiksCube,
}
GROUP_NAMES = ["SO(n)", "O(n)", "SU(n)", "SL(n)", "GL+(n)", "Sp(2m)", "Scaling(n)", "O(1,3)", "Lorentz",
               "SO(1,3)", "SO+(1,3)", "SO+(1,1)", "S(n)", "Z(n)", "C(k)", "D(k)", "Signs(n)", "Trivial(n)", "RubiksCube",
               "Skeleton(<group>)"]

_BASE = re.compile(r"^([A-Za-z]+\+?)\((\d+)\)$")
_WHERE_PREFIX = re.compile(r"^\[(\d+(?:,\d+)*)\](?::(\d+))?")


def _fail(spec: str, why: str) -> GroupError:
    """The parse error: what was wrong, the known groups and the grammar."""
    return GroupError(f"cannot parse group {spec!r}: {why}.\nKnown groups: {', '.join(GROUP_NAMES)}\n"
                      f"Grammar:\n{GROUP_GRAMMAR}")


def _unknown_name(spec: str, name: str, arg: int) -> GroupError:
    """An unknown NAME(n), with the closest known names as a suggestion."""
    import difflib

    display = {n.split("(")[0].upper(): n.split("(")[0] for n in GROUP_NAMES if n.endswith(("(n)", "(k)", "(2m)"))}
    aliases = {"DIHEDRAL": "D", "CYCLIC": "C", "SYMMETRIC": "S", "PERM": "S", "PERMUTATION": "S",
               "ORTHOGONAL": "O", "ROTATION": "SO", "SPECIALORTHOGONAL": "SO", "UNITARY": "SU", "SYMPLECTIC": "SP",
               "SIGN": "SIGNS", "REFLECTIONS": "SIGNS", "IDENTITY": "TRIVIAL"}
    key = name.upper()
    close = [aliases[key]] if key in aliases else difflib.get_close_matches(key, sorted(display), n=3, cutoff=0.5)
    hint = f" (did you mean {' or '.join(repr(f'{display[c]}({arg})') for c in close)}?)" if close else ""
    return _fail(spec, f"unknown group name {name!r}{hint}")


def _parse_base(text: str, spec: str) -> Group:
    fixed = _FIXED.get(text.upper())
    if fixed is not None:
        return fixed()
    m = _BASE.match(text)
    if not m:
        if re.match(r"^[A-Za-z]+\+?\(\d+,\d+\)$", text):
            raise _fail(spec, f"{text!r}: the built-in indefinite orthogonal groups are O(1,3) (= Lorentz), SO(1,3), "
                              "SO+(1,3) and SO+(1,1) (metric diag(1,-1,...)); for another signature pass its Lie "
                              "algebra to softsym.Group(lie_algebra=...)")
        raise _fail(spec, f"{text!r} is not of the form NAME(n)")
    name, arg = m.group(1).upper(), int(m.group(2))
    ctor = _ONE_ARG.get(name)
    if ctor is None:
        raise _unknown_name(spec, m.group(1), arg)
    return ctor(arg)


class _Parser:
    """Recursive descent over the whitespace-free spec (see GROUP_GRAMMAR)."""

    def __init__(self, text: str, spec: str):
        self.text, self.spec, self.i = text, spec, 0

    def peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def parse(self) -> Group:
        group = self.product()
        if self.i != len(self.text):
            raise _fail(self.spec, f"unexpected {self.text[self.i:]!r} at position {self.i}")
        return group

    def product(self) -> Group:
        group = self.factor()
        while self.peek() == "*":
            self.i += 1
            group = group * self.factor()
        return group

    def factor(self) -> Group:
        group = self.atom()
        while self.peek() == "@":
            self.i += 1
            group = self.where(group)
        return group

    def atom(self) -> Group:
        if self.peek() == "(":
            self.i += 1
            group = self.product()
            if self.peek() != ")":
                raise _fail(self.spec, f"missing ')' at position {self.i}")
            self.i += 1
            return group
        start = self.i
        while self.i < len(self.text) and (self.text[self.i].isalnum() or self.text[self.i] in "+_"):
            self.i += 1
        if self.text[start:self.i].upper() == "SKELETON" and self.peek() == "(":
            return self.skeleton(start)
        if self.peek() == "(":  # arguments of the base, e.g. O(3), SO(1,3)
            close = self.text.find(")", self.i)
            if close < 0:
                raise _fail(self.spec, f"missing ')' after {self.text[start:self.i]!r}")
            self.i = close + 1
        text = self.text[start:self.i]
        if not text:
            what = repr(self.peek()) if self.peek() else "the end"
            raise _fail(self.spec, f"expected a group name at position {start}, found {what}"
                        + (" (empty factor around '*')" if self.peek() in ("*", "") else ""))
        return _parse_base(text, self.spec)

    def skeleton(self, start: int) -> Group:
        """'Skeleton(' spec ')': the finite skeleton, named by the inner group's canonical name ("skeleton(o(3))"
        is "Skeleton(O(3))", as "o(3)" is "O(3)"); a trivial or too large one raises saying which."""
        from .skeleton import finite_skeleton

        self.i += 1
        group = self.product()
        if self.peek() != ")":
            raise _fail(self.spec, f"missing ')' closing Skeleton( at position {self.i}")
        self.i += 1
        return finite_skeleton(group, strict=True)

    def where(self, group: Group) -> Group:
        rest = self.text[self.i:]
        if rest[:1].lower() in ("x", "y", "z") and not rest[1:2].isalnum():
            self.i += 1
            return Embed(group, rest[0].lower())
        m = _WHERE_PREFIX.match(rest)
        if not m:
            raise _fail(self.spec, f"embedding {rest!r} must start with x, y, z or [i,j,...][:d]")
        self.i += m.end()
        coords = tuple(int(c) for c in m.group(1).split(","))
        d = int(m.group(2)) if m.group(2) else None
        return Embed(group, coords, d)


def parse_group(spec: Union[str, Group]) -> Group:
    """Parse a group spec such as "O(3)", "SO(1,3)", "O(2)@z", "S(5)", "D(6)" or "SO(2)*S(3)".

    A :class:`Group` passes through unchanged; anything unknown raises :class:`GroupError` with the grammar.
    """
    if isinstance(spec, Group):
        return spec
    if not isinstance(spec, str):
        raise GroupError(f"a group spec must be a string such as 'O(3)' or a Group, got {type(spec).__name__}")
    text = re.sub(r"\s+", "", spec).replace("×", "*")
    if not text:
        raise _fail(spec, "the spec is empty")
    try:
        return _Parser(text, spec).parse()
    except RecursionError:
        raise GroupError(f"group spec nested too deeply ({text.count('(')} brackets in {len(text)} characters); "
                         "write it with fewer nested brackets") from None


def canonical_spec(spec: str) -> str:
    """The group's own name when it parses back to the same group ("o(3)" -> "O(3)", "Lorentz" -> "O(1,3)"), else
    the spec without surrounding whitespace: so tables, configs and metrics name one group one way."""
    group = parse_group(spec)
    try:
        if parse_group(group.name).key == group.key:
            return group.name
    except GroupError:
        pass
    return spec.strip()
