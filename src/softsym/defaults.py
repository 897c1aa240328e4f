"""Every numerical default of softsym, named once and documented here.

The benchmark prints these values so that reported figures can be reproduced.
"""
from __future__ import annotations

import os

#: Relative singular-value threshold of the solver: a direction whose (normalised) constraint singular value is
#: below ``SOLVER_TOL * sigma_max`` is taken as invariant. The Gram-matrix route cannot resolve singular values
#: below ~1e-8 relative, so values under 1e-7 are clamped up.
SOLVER_TOL: float = 1e-6

#: Maximal allowed residual ``max_i ||drho(A_i) q|| / ||A_i||`` (and ``||rho(h) q - q|| / ||rho(h)||``) of a
#: returned basis vector; a path whose result exceeds it falls back to a slower, more robust path.
RESIDUAL_TOL: float = 1e-9

#: Blocks of at most this many dimensions are solved densely (SVD of the full constraint): fastest and most robust.
DENSE_MAX_DIM: int = 128

#: Largest block the dense fallback may take before the matrix-free iterative path is used.
DENSE_FALLBACK_MAX_DIM: int = 4096

#: Spread of non-compact samplers (standard deviation of the symmetric / boost generator coefficients).
#: Lorentz boosts get rapidity ~ N(0, SAMPLE_SPREAD^2) along a Haar-random direction; GL+(n), SL(n), Sp(2m) and
#: Scaling(n) use P = exp(S) with S symmetric in the algebra, entries ~ N(0, SAMPLE_SPREAD^2).
SAMPLE_SPREAD: float = 0.5

#: Seed for the random generic element used to diagonalise a Lie algebra (fixed so that solves are reproducible).
SOLVER_SEED: int = 1234

#: GroupAverage's default number of Monte-Carlo samples per call for compact continuous groups.
DEFAULT_MC_SAMPLES: int = 16


#: Smallest relative singular-value threshold of the SVD paths: float64 round-off puts the singular values of exact
#: null vectors near 1e-16, so a smaller tol would classify them as non-null and return too small a basis.
SVD_TOL_FLOOR: float = 1e-11
#: Largest tensor block the matrix-free iterative path takes on, and the largest null space it looks for: beyond
#: these LOBPCG runs for many minutes (or exhausts memory), so the block is refused with BasisTooLargeError instead.
ITERATIVE_MAX_DIM: int = 1 << 14
ITERATIVE_MAX_BLOCK: int = 128

#: Most generator entries (k d^2, summed over both generator sets) a group may hold: 2^26 float64 = 512 MiB.
#: Why: O(n) has n(n-1)/2 generators of n x n, so "O(1000)" would allocate 4 TB before anything else happens.
MAX_GENERATOR_ENTRIES: int = 1 << 26

def max_dense_bytes() -> int:
    """Memory cap for :attr:`Basis.Q` (bytes); ``SOFTSYM_MAX_DENSE_BYTES`` overrides the 2 GiB default."""
    value = os.environ.get("SOFTSYM_MAX_DENSE_BYTES")
    if value:
        from .errors import ConfigError

        try:
            cap = float(value)
        except ValueError:
            raise ConfigError(f"SOFTSYM_MAX_DENSE_BYTES={value!r} is not a number of bytes, e.g. 2e9") from None
        if not (cap > 0 and cap < float("inf")):
            raise ConfigError(f"SOFTSYM_MAX_DENSE_BYTES={value!r} must be a positive number of bytes, e.g. 2e9")
        return int(cap)
    return 2 * 1024**3


def as_dict() -> dict:
    """All defaults as a plain dict (printed by benchmarks)."""
    return {
        "SOLVER_TOL": SOLVER_TOL,
        "RESIDUAL_TOL": RESIDUAL_TOL,
        "DENSE_MAX_DIM": DENSE_MAX_DIM,
        "DENSE_FALLBACK_MAX_DIM": DENSE_FALLBACK_MAX_DIM,
        "SAMPLE_SPREAD": SAMPLE_SPREAD,
        "SOLVER_SEED": SOLVER_SEED,
        "DEFAULT_MC_SAMPLES": DEFAULT_MC_SAMPLES,
        "ITERATIVE_MAX_DIM": ITERATIVE_MAX_DIM,
        "ITERATIVE_MAX_BLOCK": ITERATIVE_MAX_BLOCK,
        "MAX_DENSE_BYTES": max_dense_bytes(),
    }
