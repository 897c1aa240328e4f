"""Matrix groups defined by Lie-algebra generators (k, d, d) and discrete generators (m, d, d).

Every structural decision (which solver path, whether V* equals V) is read off the generator matrices,
never off a group's name.
"""
from __future__ import annotations

import hashlib
import warnings
from functools import cached_property
from typing import Optional

import numpy as np
import torch

from ..errors import GroupError
from .sampling import exp_batch

__all__ = ["Group", "as_generator_array", "are_signed_permutations"]

_NUM_TOL = 1e-12


class GeneratorPrecisionWarning(UserWarning):
    """Generators were given in a low precision (float32 / float16): bases may miss vectors."""


def as_generator_array(mats, d: Optional[int], what: str) -> np.ndarray:
    """Validate and convert generators to a (k, d, d) float64 / complex128 numpy array."""
    if mats is None:
        if d is None:
            raise GroupError(f"cannot infer the dimension: give {what} or d")
        return np.zeros((0, d, d))
    if isinstance(mats, torch.Tensor):
        if mats.dtype == torch.bfloat16:
            mats = mats.float()
        mats = mats.detach().cpu().resolve_conj().numpy()
    try:
        arr = np.asarray(mats)
    except Exception as exc:  # ragged lists and the like
        raise GroupError(f"{what} must be an array of shape (k, d, d) with equal-sized square matrices: {exc}") from None
    # entries that are small dyadic numbers (0, +-1, +-1/2, ...: permutations, sign flips, shears) are exact
    # in any float type, so no rounding to warn about
    if arr.dtype in (np.float16, np.float32, np.complex64) and not _dyadic(arr):
        warnings.warn(
            f"{what} given in {arr.dtype} carry rounding of ~{np.finfo(arr.dtype).eps:.0e}; softsym solves in "
            f"float64 and keeps only vectors invariant to softsym.defaults.RESIDUAL_TOL (1e-9 by default), so "
            "inexact generators can lose basis vectors (or fail to solve). Build them in float64 from exact "
            "values (torch.float64 / np.float64)", GeneratorPrecisionWarning, stacklevel=3)
    if arr.dtype == object:
        raise GroupError(f"{what} must be an array of shape (k, d, d) with equal-sized square matrices (got ragged input)")
    if arr.size == 0:
        if d is None:
            if arr.ndim == 3 and arr.shape[1] == arr.shape[2]:
                d = arr.shape[1]
            else:
                raise GroupError(f"cannot infer the dimension from empty {what}: pass d=")
        return np.zeros((0, d, d))
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 3 and arr.shape[1] == arr.shape[2]:
        check_generator_budget(what, arr.shape[0], arr.shape[1])
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise GroupError(
            f"{what} must have shape (k, d, d) with square matrices, got {tuple(arr.shape)}; "
            "stack one d x d matrix per generator"
        )
    if d is not None and arr.shape[1] != d:
        raise GroupError(f"{what} act on R^{arr.shape[1]} but the group dimension is {d}")
    if not (np.issubdtype(arr.dtype, np.number)):
        raise GroupError(f"{what} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.complex128 if np.iscomplexobj(arr) else np.float64)
    if not np.all(np.isfinite(arr)):
        raise GroupError(f"{what} contain NaN or inf; check how they were computed")
    if np.iscomplexobj(arr) and np.abs(arr.imag).max() == 0:
        arr = arr.real.copy()
    return arr


from ..defaults import MAX_GENERATOR_ENTRIES  # noqa: E402


def _dyadic(arr: np.ndarray) -> bool:
    """True when every entry is an exact multiple of 1/16 of modest size (no rounding happened to it)."""
    a = np.asarray(arr)
    parts = (a.real, a.imag) if np.iscomplexobj(a) else (a,)
    return all(np.all(np.isfinite(p)) and np.all(np.abs(p) <= 1024) and np.all(p * 16 == np.round(p * 16))
               for p in parts)


def check_generator_budget(label: str, k: int, d: int) -> None:
    """Refuse a group whose k generators of d x d would not fit in MAX_GENERATOR_ENTRIES (before allocating)."""
    entries = int(k) * int(d) * int(d)
    if entries > MAX_GENERATOR_ENTRIES:
        raise GroupError(
            f"{label}: {k} generator(s) of {d} x {d} would need {entries * 8 / 1e9:.3g} GB "
            f"(more than the {MAX_GENERATOR_ENTRIES * 8 / 1e9:.3g} GB limit for generators); use a smaller group "
            "or dimension"
        )


def check_dimension(d, what: str = "group dimension") -> int:
    """A positive (non-bool) integer dimension, as int."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise GroupError(f"{what} must be a positive integer, got {d!r}")
    return int(d)


def _shape_dimension(mats) -> Optional[int]:
    """d read off generators of shape (k, d, d) or (d, d), even when k = 0 (None when it cannot be read)."""
    if mats is None:
        return None
    shape = tuple(mats.shape) if isinstance(mats, (np.ndarray, torch.Tensor)) else None
    if shape is None:
        try:
            shape = np.shape(mats)
        except Exception:  # ragged: as_generator_array reports it
            return None
    if len(shape) in (2, 3) and shape[-1] == shape[-2] and shape[-1] > 0:
        return int(shape[-1])
    return None


def are_signed_permutations(mats: np.ndarray, atol: float = 0.0) -> bool:
    """Every matrix of (k, d, d) ``mats`` is real with one non-zero entry per row and column, equal to +-1 within
    ``atol`` (an empty stack is vacuously True)."""
    if np.iscomplexobj(mats):
        return False
    nz = np.abs(mats) > 0
    return bool(np.all(nz.sum(-1) == 1) and np.all(nz.sum(-2) == 1)
                and np.all(np.abs(np.abs(mats[nz]) - 1.0) <= atol))


class Group:
    """A matrix group G < GL(d) given by Lie-algebra and discrete generators.

    Parameters
    ----------
    lie_algebra : array (k, d, d), optional
        Basis of the Lie algebra (the identity component is exp of its span).
    discrete_generators : array (m, d, d), optional
        Elements that, with the identity component, generate the group.
    d : int, optional
        Dimension, needed only when both generator sets are empty.
    name : str, optional
        Display name; never used to decide anything.

    Example
    -------
    >>> import numpy as np, softsym
    >>> G = softsym.Group(lie_algebra=np.array([[[0., -1.], [1., 0.]]]), name="SO(2)")
    >>> G.d
    2
    """

    def __init__(
        self,
        lie_algebra: Optional[np.ndarray] = None,
        discrete_generators: Optional[np.ndarray] = None,
        d: Optional[int] = None,
        *,
        name: Optional[str] = None,
        compact: Optional[bool] = None,
    ) -> None:
        if d is None:  # read d off whichever generator set has a shape (k, d, d), even if k = 0
            d = _shape_dimension(lie_algebra) or _shape_dimension(discrete_generators)
            if d is None:  # no usable shape: let the validator say what is wrong with the input
                for mats, what in ((lie_algebra, "Lie-algebra generators"), (discrete_generators, "discrete generators")):
                    if mats is not None:
                        as_generator_array(mats, None, what)
        if d is not None:
            d = check_dimension(d)
        self._lie = as_generator_array(lie_algebra, d, "Lie-algebra generators")
        self._disc = as_generator_array(discrete_generators, d, "discrete generators")
        if self._lie.shape[1] != self._disc.shape[1]:
            raise GroupError(
                f"Lie generators act on R^{self._lie.shape[1]} but discrete generators on R^{self._disc.shape[1]}"
            )
        self.d: int = int(self._lie.shape[1])
        if len(self._disc):
            dets = np.linalg.det(self._disc)
            if np.any(np.abs(dets) < 1e-12):
                raise GroupError("a discrete generator is singular (det = 0); group elements must be invertible")
        self._name = name
        self._compact = compact

    # ------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        """Display name: the one given, else :attr:`_default_name` (distinct for groups with distinct generators)."""
        return self._name or self._default_name

    @cached_property
    def _default_name(self) -> str:
        """Name of an unnamed group: its shape and the first 8 hex digits of :attr:`key`, so that two different
        unnamed groups never share a name (reports, tables and metrics are keyed by names)."""
        return f"Group(d={self.d}, lie={len(self._lie)}, discrete={len(self._disc)}, key={self.key[:8]})"

    @property
    def lie_algebra(self) -> torch.Tensor:
        """Lie-algebra generators as a torch tensor (k, d, d), float64 (complex128 for complex groups)."""
        return torch.from_numpy(self._lie.copy())

    @property
    def discrete_generators(self) -> torch.Tensor:
        """Discrete generators as a torch tensor (m, d, d), float64 (complex128 for complex groups)."""
        return torch.from_numpy(self._disc.copy())

    @property
    def lie_np(self) -> np.ndarray:
        return self._lie

    @property
    def discrete_np(self) -> np.ndarray:
        return self._disc

    @cached_property
    def is_complex(self) -> bool:
        """True when a generator has a non-zero imaginary part (e.g. SU(n))."""
        return np.iscomplexobj(self._lie) or np.iscomplexobj(self._disc)

    @cached_property
    def is_orthogonal(self) -> bool:
        """Generators preserve the standard inner product (antisymmetric / orthogonal), so V* = V exactly."""
        lie_ok = all(np.abs(a + a.conj().T).max() <= _NUM_TOL * max(1.0, np.abs(a).max()) for a in self._lie)
        eye = np.eye(self.d)
        disc_ok = all(np.abs(h.conj().T @ h - eye).max() <= 1e-12 for h in self._disc)
        return bool(lie_ok and disc_ok and not self.is_complex)

    @cached_property
    def is_compact(self) -> bool:
        """Declared compactness, else inferred: unitary generators generate a compact closure."""
        if self._compact is not None:
            return bool(self._compact)
        lie_ok = all(np.abs(a + a.conj().T).max() <= 1e-10 * max(1.0, np.abs(a).max()) for a in self._lie)
        eye = np.eye(self.d)
        disc_ok = all(np.abs(h.conj().T @ h - eye).max() <= 1e-10 for h in self._disc)
        if lie_ok and disc_ok:
            return True
        if len(self._lie) or not self._finite_order_generators():
            return False
        # a finite group in a skewed basis (S^-1 P S): not unitary, still compact; enumerable ones are found here
        return self._elements is not None

    def _finite_order_generators(self) -> bool:
        """Every discrete generator has all eigenvalues on the unit circle (cheap necessary test of finiteness)."""
        for h in self._disc:
            if h.shape[-1] > 512:
                return False
            if np.abs(np.abs(np.linalg.eigvals(h)) - 1.0).max() > 1e-6:
                return False
        return True

    @cached_property
    def is_signed_permutation(self) -> bool:
        """No Lie algebra and every discrete generator is a signed permutation matrix."""
        return not len(self._lie) and not self.is_complex and are_signed_permutations(self._disc, atol=1e-14)

    @cached_property
    def key(self) -> str:
        """Content hash of the generator matrices (two groups with equal generators share it)."""
        h = hashlib.sha256()
        for arr in (self._lie, self._disc):
            a = np.ascontiguousarray(arr + 0.0)  # -0.0 and 0.0 are the same generator entry
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------ finite groups
    @cached_property
    def _elements(self) -> Optional[np.ndarray]:
        """All elements of a group without Lie algebra (closure over the discrete generators, identity first), or
        None when it has a Lie algebra, is infinite or has more than ENUMERATE_MAX elements (or than fit in
        MAX_ENTRIES). Why here: products and embeddings of finite groups (S(2)*S(3), D(6)@z) are finite too."""
        if len(self._lie):
            return None
        if not len(self._disc):
            return np.eye(self.d)[None]
        from .finite import ENUMERATE_MAX, _closure

        return _closure(self._disc, ENUMERATE_MAX)

    @property
    def order(self) -> Optional[int]:
        """Number of elements; None for a group with a Lie algebra (infinite), an infinite discrete group, or a
        finite one with more than ``softsym.groups.finite.ENUMERATE_MAX`` elements."""
        els = self._elements
        return None if els is None else len(els)

    def elements(self) -> np.ndarray:
        """All group elements (order, d, d); raises GroupError when the group cannot be enumerated."""
        els = self._elements
        if els is not None:
            return els
        if len(self._lie):
            raise GroupError(f"{self.name} has a Lie algebra, so infinitely many elements; sample it with .sample(n)")
        from .finite import ENUMERATE_MAX, _order_bound

        raise GroupError(f"{self.name} has more than {_order_bound(self.d, ENUMERATE_MAX)} elements in R^{self.d} "
                         "(or infinitely many); it cannot be enumerated (sample it with .sample(n) instead)")

    # ------------------------------------------------------------------ group operations
    def exp(self, a) -> torch.Tensor:
        """Matrix exponential of Lie-algebra element(s) (..., d, d), as a torch tensor."""
        t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
        if t.ndim < 2 or tuple(t.shape[-2:]) != (self.d, self.d):
            raise GroupError(f"{self.name}.exp needs Lie-algebra element(s) of shape (..., {self.d}, {self.d}), "
                             f"got {tuple(t.shape)}")
        if not (t.dtype.is_floating_point or t.dtype.is_complex):
            t = t.to(torch.float64)
        return torch.linalg.matrix_exp(t)

    def sample(self, n: int = 1, *, seed: Optional[int] = None, generator: Optional[np.random.Generator] = None,
               spread: Optional[float] = None) -> torch.Tensor:
        """Draw ``n`` group elements as a torch tensor (n, d, d), float64 (complex128 for complex groups).

        Exact Haar for SO(n), O(n), SU(n); uniform for enumerable finite groups; polar decomposition with ``spread``
        (default :data:`softsym.defaults.SAMPLE_SPREAD`) for SL, GL+, Sp and the Lorentz groups; groups given only by
        generators use the generic sampler of :meth:`_sample_np`. :meth:`describe_sampler` says which.
        Without ``seed`` or ``generator`` the draws come from torch's global generator (``torch.manual_seed``).
        """
        from .. import defaults

        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise GroupError(f"sample(n) needs a non-negative integer n, got {n!r}")
        if isinstance(generator, torch.Generator):  # a torch user's generator: advance it, draw a numpy stream
            generator = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        if generator is not None:
            if not isinstance(generator, np.random.Generator):
                raise GroupError(f"sample(generator=...) needs a numpy.random.Generator or a torch.Generator, got "
                                 f"{type(generator).__name__}")
            rng = generator
        else:
            try:
                if isinstance(seed, (bool, float)):
                    raise TypeError("not an integer")
                if seed is None:  # from torch's global generator: torch.manual_seed makes the draws reproducible
                    seed = int(torch.randint(0, 2**62, (1,), device="cpu"))
                rng = np.random.default_rng(seed)
            except (TypeError, ValueError) as exc:
                raise GroupError(f"sample(seed=...) needs a non-negative integer (or None), got {seed!r} ({exc})") from None
        if spread is None:
            spread = defaults.SAMPLE_SPREAD
        else:
            try:
                spread = float(spread)
            except (TypeError, ValueError):
                spread = float("nan")
            if not (np.isfinite(spread) and spread >= 0):
                raise GroupError(f"sample(spread=...) needs a finite number >= 0, got {spread!r}")
        need, cap = int(n) * self.d * self.d * (16 if self.is_complex else 8), defaults.max_dense_bytes()
        if need > cap:
            raise GroupError(f"sampling {n} elements of {self.name} needs {need / 1e9:.3g} GB ({n} x {self.d} x "
                             f"{self.d} matrices), more than the {cap / 1e9:.3g} GB cap (SOFTSYM_MAX_DENSE_BYTES); "
                             "draw fewer at a time")
        out = self._sample_np(int(n), rng, spread)
        return torch.from_numpy(np.ascontiguousarray(out))

    def _sample_np(self, n: int, rng: np.random.Generator, spread: float) -> np.ndarray:
        """Generic sampler: exp of a random algebra element times a random word in the discrete generators.

        For a compact connected group the exponential of N(0, pi^2)-scaled algebra elements covers the group but
        is not exactly Haar; subclasses override with exact samplers.
        """
        d = self.d
        dtype = np.complex128 if self.is_complex else np.float64
        out = np.tile(np.eye(d, dtype=dtype), (n, 1, 1))
        if len(self._lie):
            scale = np.pi if self.is_compact else spread
            coeffs = rng.standard_normal((n, len(self._lie))) * scale
            norms = np.linalg.norm(self._lie.reshape(len(self._lie), -1), axis=1)
            norms = np.where(norms > 0, norms, 1.0)  # a zero generator contributes nothing (not 0 / 0)
            a = np.einsum("nk,kij->nij", coeffs / norms, self._lie)
            out = exp_batch(a)
        if len(self._disc):
            out = self._random_words(n, rng) @ out
        return out

    def describe_sampler(self, spread: Optional[float] = None) -> str:
        """How :meth:`sample` draws elements, in words (metrics report it); subclasses with their own sampler
        override it together with :meth:`_sample_np`."""
        parts = []
        if len(self._lie):
            s = self._spread(spread)
            parts.append("exp of random Lie-algebra elements " + (
                "(coefficients ~ N(0, pi^2); approximately Haar)" if self.is_compact
                else f"(spread {s:g}: coefficients ~ N(0, {s:g}^2))"))
        if len(self._disc):
            parts.append("random words (32 steps) in the discrete generators")
        return " times ".join(parts) or "the identity (trivial group)"

    @staticmethod
    def _spread(spread: Optional[float]) -> float:
        from .. import defaults

        return defaults.SAMPLE_SPREAD if spread is None else float(spread)

    def _random_words(self, n: int, rng: np.random.Generator, length: int = 32) -> np.ndarray:
        """Random products of discrete generators (and their inverses), a lazy random walk."""
        gens = list(self._disc)
        gens += [np.linalg.inv(h) for h in self._disc]
        gens.append(np.eye(self.d))
        out = np.tile(np.eye(self.d, dtype=self._disc.dtype), (n, 1, 1))
        for _ in range(length):
            idx = rng.integers(0, len(gens), size=n)
            out = np.stack(gens)[idx] @ out
        return out

    # ------------------------------------------------------------------ dunder
    def __mul__(self, other: "Group") -> "Group":
        from .compose import DirectProduct

        if not isinstance(other, Group):
            return NotImplemented
        return DirectProduct(self, other)

    def __eq__(self, other) -> bool:
        return isinstance(other, Group) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name
