"""Groups built from groups: Embed (a group acting on some coordinates of R^d) and direct products."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from ..errors import GroupError
from .base import Group, check_dimension, check_generator_budget

__all__ = ["Embed", "DirectProduct", "AXIS_COORDS"]

#: "G@x" embeds a 2-dimensional G into R^3 acting on the two coordinates orthogonal to the axis.
AXIS_COORDS = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}


class Embed(Group):
    """G acting on the coordinates ``coords`` of R^d and trivially on the rest.

    ``Embed(O(2), (0, 1), 3)`` is O(2) rotating about the z axis ("O(2)@z"). ``coords`` may also be one of
    "x", "y", "z" for a 2-dimensional G in R^3. ``group`` may be a spec string ("O(2)").
    """

    def __init__(self, group: Union[str, Group], coords: Union[str, Sequence[int]], d: Optional[int] = None, *,
                 name: Optional[str] = None):
        if isinstance(group, str):
            from .parse import parse_group

            group = parse_group(group)
        if not isinstance(group, Group):
            raise GroupError(f"Embed needs a Group or a group spec such as 'O(2)', got {type(group).__name__}")
        axis = None
        if isinstance(coords, str):
            axis = coords.lower()
            if axis not in AXIS_COORDS:
                raise GroupError(f"unknown axis {coords!r}; use 'x', 'y', 'z' or a tuple of coordinates")
            if group.d != 2:
                raise GroupError(f"'@{axis}' embeds a group acting on R^2 into R^3, but {group.name} acts on R^{group.d}")
            if d is not None and d != 3:
                raise GroupError(f"'@{axis}' embeds a group acting on R^2 into R^3, not R^{d}; give coordinates "
                                 f"instead, e.g. Embed({group.name}, (0, 1), {d})")
            coords, d = AXIS_COORDS[axis], 3
        if d is not None:
            d = check_dimension(d, "Embed's dimension d")
        try:
            coords = tuple(coords)
        except TypeError:
            raise GroupError(f"Embed needs a sequence of coordinate indices or 'x', 'y', 'z', got {coords!r}") from None
        if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in coords):
            raise GroupError(f"Embed: coordinates must be integers, got {coords!r}")
        coords = tuple(int(c) for c in coords)
        if len(coords) != group.d:
            raise GroupError(
                f"Embed: {group.name} acts on R^{group.d} but {len(coords)} coordinates were given ({coords}); "
                f"give exactly {group.d}"
            )
        if len(set(coords)) != len(coords):
            raise GroupError(f"Embed: coordinates {coords} repeat an index")
        if d is None:
            d = max(coords) + 1
        if min(coords) < 0 or max(coords) >= d:
            raise GroupError(f"Embed: coordinates {coords} do not fit in R^{d}; use indices 0..{d - 1}")
        check_generator_budget(f"Embed into R^{d}", len(group.lie_np) + len(group.discrete_np), d)
        self.inner, self.coords = group, coords
        idx = np.ix_(coords, coords)
        dtype = np.complex128 if group.is_complex else np.float64
        lie = np.zeros((len(group.lie_np), d, d), dtype)
        lie[(slice(None),) + idx] = group.lie_np
        disc = np.tile(np.eye(d, dtype=dtype), (len(group.discrete_np), 1, 1))
        disc[(slice(None),) + idx] = group.discrete_np
        inner = f"({group.name})" if ("*" in group.name or "@" in group.name) else group.name
        label = name or (f"{inner}@{axis}" if axis else f"{inner}@[{','.join(map(str, coords))}]:{d}")  # as in the grammar
        super().__init__(lie, disc, d, name=label, compact=group.is_compact)

    def _sample_np(self, n, rng, spread):
        inner = self.inner._sample_np(n, rng, spread)
        out = np.tile(np.eye(self.d, dtype=inner.dtype), (n, 1, 1))
        out[(slice(None),) + np.ix_(self.coords, self.coords)] = inner
        return out

    def describe_sampler(self, spread: Optional[float] = None) -> str:
        return self.inner.describe_sampler(spread)


class DirectProduct(Group):
    """G1 x G2 acting on R^(d1 d2) by the Kronecker product g1 (x) g2 (block actions go through Embed)."""

    def __init__(self, g1: Group, g2: Group):
        if not (isinstance(g1, Group) and isinstance(g2, Group)):
            raise GroupError("DirectProduct needs two Group objects")
        self.factors = (g1, g2)
        check_generator_budget(f"{g1.name}*{g2.name}", len(g1.lie_np) + len(g1.discrete_np) + len(g2.lie_np)
                               + len(g2.discrete_np), g1.d * g2.d)
        i1, i2 = np.eye(g1.d), np.eye(g2.d)
        lie = [np.kron(a, i2) for a in g1.lie_np] + [np.kron(i1, b) for b in g2.lie_np]
        disc = [np.kron(h, i2) for h in g1.discrete_np] + [np.kron(i1, h) for h in g2.discrete_np]
        d = g1.d * g2.d
        dtype = np.complex128 if (g1.is_complex or g2.is_complex) else np.float64
        super().__init__(
            np.array(lie, dtype).reshape(-1, d, d),
            np.array(disc, dtype).reshape(-1, d, d),
            d,
            name=f"{g1.name}*{g2.name}",
            compact=g1.is_compact and g2.is_compact,
        )

    def _sample_np(self, n, rng, spread):
        a = self.factors[0]._sample_np(n, rng, spread)
        b = self.factors[1]._sample_np(n, rng, spread)
        return np.einsum("nij,nkl->nikjl", a, b).reshape(n, self.d, self.d)

    def describe_sampler(self, spread: Optional[float] = None) -> str:
        a, b = (f.describe_sampler(spread) for f in self.factors)
        return a if a == b == "Haar" else f"Kronecker product of ({a}) and ({b})"
