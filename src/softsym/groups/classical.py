"""Classical Lie groups with EMLP's naming conventions.

SO(n), O(n), SU(n), SL(n), GL+(n), Sp(2m), Scaling(n), and the Lorentz family O(1,3), SO(1,3), SO+(1,3),
SO+(1,1). Each class only supplies generators and an exact sampler; nothing downstream reads the class.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import GroupError
from .base import Group, check_generator_budget
from .sampling import (
    haar_orthogonal,
    haar_special_orthogonal,
    haar_unitary,
    lorentz_boosts,
    random_symmetric,
    sym_exp,
)

__all__ = ["SO", "O", "SU", "SL", "GLPlus", "Sp", "Scaling", "O13", "SO13", "SO13p", "SO11p", "Lorentz"]


def _check_n(n, name: str, minimum: int = 1, generators=None) -> int:
    """n as int; ``generators(n)`` = how many n x n generators the group has (refused above the memory budget)."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < minimum:
        raise GroupError(f"{name}(n) needs an integer n >= {minimum}, got {n!r}")
    n = int(n)
    if generators is not None:
        check_generator_budget(f"{name}({n})", generators(n), n)
    return n


def so_generators(n: int) -> np.ndarray:
    """Basis E_ij - E_ji (i < j) of so(n); shape (n(n-1)/2, n, n)."""
    gens = []
    for i in range(n):
        for j in range(i + 1, n):
            a = np.zeros((n, n))
            a[i, j], a[j, i] = -1.0, 1.0
            gens.append(a)
    return np.array(gens).reshape(-1, n, n)


class SO(Group):
    """Special orthogonal group SO(n) acting on R^n."""

    def __init__(self, n: int):
        n = _check_n(n, "SO", 1, lambda n: n * (n - 1) // 2)
        super().__init__(so_generators(n), None, n, name=f"SO({n})", compact=True)

    def _sample_np(self, n, rng, spread):
        return haar_special_orthogonal(n, self.d, rng)

    def describe_sampler(self, spread: Optional[float] = None) -> str:
        return "Haar"


class O(Group):
    """Orthogonal group O(n): so(n) plus the reflection diag(-1, 1, ..., 1)."""

    def __init__(self, n: int):
        n = _check_n(n, "O", 1, lambda n: n * (n - 1) // 2 + 1)
        refl = np.eye(n)
        refl[0, 0] = -1.0
        super().__init__(so_generators(n), refl[None], n, name=f"O({n})", compact=True)

    def _sample_np(self, n, rng, spread):
        return haar_orthogonal(n, self.d, rng)

    def describe_sampler(self, spread: Optional[float] = None) -> str:
        return "Haar"


class SU(Group):
    """Special unitary group SU(n) on C^n (complex representation, complex128 generators)."""

    def __init__(self, n: int):
        n = _check_n(n, "SU", 2, lambda n: n * n - 1)
        gens = []
        for i in range(n):
            for j in range(i + 1, n):
                a = np.zeros((n, n), complex)
                a[i, j], a[j, i] = -1.0, 1.0
                gens.append(a)
                b = np.zeros((n, n), complex)
                b[i, j], b[j, i] = 1j, 1j
                gens.append(b)
        for i in range(n - 1):
            c = np.zeros((n, n), complex)
            c[i, i], c[n - 1, n - 1] = 1j, -1j
            gens.append(c)
        super().__init__(np.array(gens), None, n, name=f"SU({n})", compact=True)

    def _sample_np(self, n, rng, spread):
        return haar_unitary(n, self.d, rng, special=True)

    def describe_sampler(self, spread: Optional[float] = None) -> str:
        return "Haar"


def _elementary(n: int, include_diagonal: bool, traceless: bool) -> np.ndarray:
    gens = []
    for i in range(n):
        for j in range(n):
            if i != j:
                a = np.zeros((n, n))
                a[i, j] = 1.0
                gens.append(a)
    if include_diagonal:
        if traceless:
            for i in range(n - 1):
                a = np.zeros((n, n))
                a[i, i], a[n - 1, n - 1] = 1.0, -1.0
                gens.append(a)
        else:
            for i in range(n):
                a = np.zeros((n, n))
                a[i, i] = 1.0
                gens.append(a)
    return np.array(gens).reshape(-1, n, n)


def _polar(spread) -> str:
    return f"polar decomposition K exp(S), spread {Group._spread(spread):g}"


class SL(Group):
    """Special linear group SL(n): traceless algebra; sampled as K exp(S), S symmetric traceless."""

    def __init__(self, n: int):
        n = _check_n(n, "SL", 2, lambda n: n * n - 1)
        super().__init__(_elementary(n, True, True), None, n, name=f"SL({n})", compact=False)

    def _sample_np(self, n, rng, spread):
        k = haar_special_orthogonal(n, self.d, rng)
        return k @ sym_exp(random_symmetric(n, self.d, rng, spread, traceless=True))

    def describe_sampler(self, spread: Optional[float] = None) -> str:
        return _polar(spread)


class GLPlus(Group):
    """GL+(n), invertible matrices with positive determinant; sampled as K exp(S), S symmetric."""

    def __init__(self, n: int):
        n = _check_n(n, "GL+", 1, lambda n: n * n)
        super().__init__(_elementary(n, True, False), None, n, name=f"GL+({n})", compact=False)

    def _sample_np(self, n, rng, spread):
        k = haar_special_orthogonal(n, self.d, rng)
        return k @ sym_exp(random_symmetric(n, self.d, rng, spread, traceless=False))

    def describe_sampler(self, spread: Optional[float] = None) -> str:
        return _polar(spread)


def symplectic_form(m: int) -> np.ndarray:
    """J = [[0, I_m], [-I_m, 0]]."""
    j = np.zeros((2 * m, 2 * m))
    j[:m, m:] = np.eye(m)
    j[m:, :m] = -np.eye(m)
    return j


class Sp(Group):
    """Symplectic group Sp(2m) of 2m x 2m matrices preserving J (argument = matrix size; EMLP's Sp(m))."""

    def __init__(self, n: int):
        n = _check_n(n, "Sp", 2, lambda n: n * (n + 1) // 2)
        if n % 2:
            raise GroupError(f"Sp(n) takes the matrix size n, which must be even (Sp(2m)); got {n}")
        m = n // 2
        j = symplectic_form(m)
        gens = []
        for a in range(n):
            for b in range(a, n):
                s = np.zeros((n, n))
                s[a, b] = s[b, a] = 1.0
                gens.append(j @ s)
        super().__init__(np.array(gens), None, n, name=f"Sp({n})", compact=False)
        self._m = m

    def _sample_np(self, n, rng, spread):
        m = self._m
        u = haar_unitary(n, m, rng)
        k = np.block([[u.real, -u.imag], [u.imag, u.real]])
        a = random_symmetric(n, m, rng, spread, traceless=False)
        b = random_symmetric(n, m, rng, spread, traceless=False)
        s = np.block([[a, b], [b, -a]])  # symmetric element of sp(2m)
        return k @ sym_exp(s)

    def describe_sampler(self, spread: Optional[float] = None) -> str:
        return _polar(spread)


class Scaling(Group):
    """Positive scalings x -> e^t x of R^n (one generator, the identity); t ~ N(0, spread^2)."""

    def __init__(self, n: int):
        n = _check_n(n, "Scaling", 1, lambda n: 1)
        super().__init__(np.eye(n)[None], None, n, name=f"Scaling({n})", compact=False)

    def _sample_np(self, n, rng, spread):
        t = rng.standard_normal(n) * spread
        return np.exp(t)[:, None, None] * np.eye(self.d)

    def describe_sampler(self, spread: Optional[float] = None) -> str:
        s = self._spread(spread)
        return f"e^t I (spread {s:g}: t ~ N(0, {s:g}^2))"


def lorentz_generators(spatial: int = 3) -> np.ndarray:
    """Boosts K_i and rotations L_ij of so(1, k), metric diag(1, -1, ..., -1)."""
    d = spatial + 1
    gens = []
    for i in range(1, d):
        k = np.zeros((d, d))
        k[0, i] = k[i, 0] = 1.0
        gens.append(k)
    for i in range(1, d):
        for j in range(i + 1, d):
            a = np.zeros((d, d))
            a[i, j], a[j, i] = -1.0, 1.0
            gens.append(a)
    return np.array(gens)


class _LorentzBase(Group):
    _discrete: tuple = ()
    _label = ""

    def __init__(self):
        disc = [np.diag(v) for v in self._discrete]
        super().__init__(lorentz_generators(3), np.array(disc).reshape(-1, 4, 4), 4, name=self._label, compact=False)

    def _sample_np(self, n, rng, spread):
        rot = np.tile(np.eye(4), (n, 1, 1))
        rot[:, 1:, 1:] = haar_special_orthogonal(n, 3, rng)
        g = lorentz_boosts(n, rng, spread) @ rot
        if self._discrete:
            elems = [np.eye(4)]
            for v in self._discrete:  # the generators commute and square to I: all products, once each
                elems += [e @ np.diag(v) for e in elems]
            pick = np.stack(elems)[rng.integers(0, len(elems), size=n)]
            g = pick @ g
        return g

    def describe_sampler(self, spread: Optional[float] = None) -> str:
        s = self._spread(spread)
        text = f"polar decomposition: boost (spread {s:g}: rapidity ~ N(0, {s:g}^2)) times a Haar rotation"
        return text + (" times a uniform discrete element" if self._discrete else "")


class O13(_LorentzBase):
    """Full Lorentz group O(1,3) (EMLP's Lorentz): so(1,3) plus parity P and time reversal T."""

    _discrete = ((1.0, -1.0, -1.0, -1.0), (-1.0, 1.0, 1.0, 1.0))
    _label = "O(1,3)"


class SO13(_LorentzBase):
    """SO(1,3), Lorentz transformations of determinant 1: so(1,3) plus PT = -I."""

    _discrete = ((-1.0, -1.0, -1.0, -1.0),)
    _label = "SO(1,3)"


class SO13p(_LorentzBase):
    """SO+(1,3), the identity component (proper orthochronous Lorentz group)."""

    _discrete = ()
    _label = "SO+(1,3)"


Lorentz = O13


class SO11p(Group):
    """SO+(1,1): boosts of 1+1 dimensional spacetime; rapidity ~ N(0, spread^2)."""

    def __init__(self):
        super().__init__(np.array([[[0.0, 1.0], [1.0, 0.0]]]), None, 2, name="SO+(1,1)", compact=False)

    def _sample_np(self, n, rng, spread):
        return lorentz_boosts(n, rng, spread, spatial_dims=1)

    def describe_sampler(self, spread: Optional[float] = None) -> str:
        s = self._spread(spread)
        return f"boosts (spread {s:g}: rapidity ~ N(0, {s:g}^2))"
