"""Basis-solver benchmark: softsym cold / warm versus a dense baseline and (optionally) EMLP.

For every case (an equivariant-map space ``Hom(rep, rep)`` of a group) it measures

* **cold**: a fresh Python subprocess imports torch and softsym, builds the rep, then times only
  ``equivariant_basis(hom, cache=False)`` (which includes softsym's lazy scipy import). Min of ``cold_runs``
  fresh processes.
* **warm**: one subprocess fills a temporary ``SOFTSYM_CACHE``; fresh subprocesses pointed at it then time
  ``equivariant_basis(hom)`` (disk cache hit, min of ``warm_runs``), and the in-process second call (memory hit).
* **dense**: the baseline a dense solver would do, in this process (in a fresh one when ``blas_threads`` is set,
  so that it runs under the same thread limits): stack ``drho(A/|A|_F)`` of every Lie generator
  and ``rho(h) - I`` of every discrete generator (structured operators, densified, float64) into C and time
  ``scipy.linalg.eigh(C^T C)`` including forming ``C^T C``; its null dimension (eigenvalues below
  ``(1e-6 sqrt(max eig))^2``) must equal softsym's. Its time is estimated first as ``(K c_gram + c_eig) n^3``
  (K = number of generators, constants calibrated at n = 729, then scaled by measured/estimated of the largest
  dense run so far) and the run is skipped above ``dense_cap`` seconds (or when C would not fit in memory).
* **EMLP** (with ``emlp_python``): a fresh ``PYTHON -c`` subprocess (``TQDM_DISABLE=1``) imports EMLP, builds the
  same rep and times ``rep.equivariant_basis()`` (what EMLP's ``equivariant_projector`` calls too), with a timeout.

Wall-clock times are reported (CPU times are kept in the JSON too), together with the 1-minute load average
around each case: on a shared machine, other processes inflate every figure (multi-threaded BLAS suffers most
when the cores are oversubscribed; ``blas_threads=1`` makes the figures robust to that).

Results are printed as a rich table and written as JSON (``benchmarks/results/basis_solve-<UTC time>.json`` and
``basis_solve-latest.json``, or ``out``).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .machine import _mem_info
from .machine import loadavg as _loadavg
from .machine import machine_info as _machine_info

__all__ = ["CASES", "Case", "run", "resolve_cases", "dense_baseline", "calibrate_dense", "machine_info", "thread_env"]

#: Relative threshold of the dense baseline (same value as softsym.defaults.SOLVER_TOL).
DENSE_REL_TOL = 1e-6
#: Size of the calibration problem of the dense-time estimate.
CALIBRATION_N = 729
#: Fraction of the available memory the dense baseline may plan to use.
DENSE_MEMORY_FRACTION = 0.6
#: Targets.
EMLP_SPEEDUP_TARGET = 20.0
WARM_TARGET_S = 0.050
DENSE_SPEEDUP_TARGET = 10.0
DENSE_SPEEDUP_FROM_DIM = 4096

_RESULT_TAG = "@@SOFTSYM-BENCH@@"


@dataclass(frozen=True)
class Case:
    """One benchmark case: Hom(rep_in, rep_out) of ``group`` (softsym specs) and the same problem in EMLP."""

    name: str
    group: str
    rep_in: str
    rep_out: str
    emlp_setup: str  # python statements defining G and rep (EMLP names), run before timing
    published_emlp: Optional[Tuple[float, float]] = None  # EMLP 1.0.3 cold figures on this machine kind (s)
    cold_target_s: Optional[float] = None  # absolute cold-time target, if any
    expected_dim: Optional[int] = None


def _tk(group_spec: str, emlp_group: str, k: int, published=None, cold_target=None, expected=None) -> Case:
    return Case(f"{group_spec} T{k}->T{k}", group_spec, f"V**{k}", f"V**{k}",
                f"G = {emlp_group}\nrep = (V**{k} >> V**{k})(G)", published, cold_target, expected)


_S6_REP = "100V0+100V+20V**2"

CASES: List[Case] = [
    _tk("SO(3)", "SO(3)", 2, (2.8, 3.9)),
    _tk("O(3)", "O(3)", 3, (7.3, 29.5), expected=15),
    _tk("O(5)", "O(5)", 2, (9.9, 32.2)),
    _tk("O(1,3)", "Lorentz()", 3, (10.4, 15.2), expected=15),
    _tk("SO(1,3)", "SO13()", 3, None, expected=25),
    _tk("O(5)", "O(5)", 3, (40.2, 52.3)),
    _tk("O(3)", "O(3)", 4, (99.8, 140.9), cold_target=2.0, expected=91),
    Case(f"S(6) {_S6_REP}->same", "S(6)", _S6_REP, _S6_REP,
         "G = S(6)\nrep = 100*Scalar + 100*V + 20*V**2\nrep = (rep >> rep)(G)", (12.0, 58.5), 5.0, 84000),
]


# ------------------------------------------------------------------------------------------- case selection
def _norm(name: str) -> str:
    return "".join(name.split()).lower()


def resolve_cases(only: Optional[Sequence[str]]) -> List[Case]:
    """Cases selected by name (exact, whitespace/case-insensitive, or a unique prefix such as "S(6)").

    Names containing commas ("O(1,3) T3->T3") survive a naive ``split(",")`` of a comma-separated list: adjacent
    fragments are re-joined when that gives a case name.
    """
    if not only:
        return list(CASES)
    from ..errors import ConfigError

    frags = [f.strip() for f in only if f is not None and f.strip()]
    by_norm = {_norm(c.name): c for c in CASES}

    def match(text: str) -> Optional[Case]:
        key = _norm(text)
        if key in by_norm:
            return by_norm[key]
        hits = [c for k, c in by_norm.items() if k.startswith(key)]
        return hits[0] if len(hits) == 1 else None

    chosen: List[Case] = []
    i = 0
    while i < len(frags):
        for j in range(len(frags), i, -1):  # longest re-joined run of fragments first
            case = match(",".join(frags[i:j]))
            if case is not None:
                if case not in chosen:
                    chosen.append(case)
                i = j
                break
        else:
            names = "\n  ".join(c.name for c in CASES)
            raise ConfigError(f"unknown or ambiguous benchmark case {frags[i]!r}; the cases are:\n  {names}")
    return chosen


# ------------------------------------------------------------------------------------------- machine info
def machine_info() -> dict:
    """Platform, CPU, memory and library versions (for reproducing the figures)."""
    import scipy  # noqa: F401 - recorded by the shared helper

    return _machine_info()


# ------------------------------------------------------------------------------------------- subprocess workers
_SOFTSYM_WORKER = r"""
import json, sys, time
import torch
import softsym
spec = json.loads(sys.argv[1])
G = softsym.group(spec["group"])
hom = softsym.Hom(softsym.rep(spec["rep_in"], G), softsym.rep(spec["rep_out"], G))
if spec.get("preload"):
    import softsym.reps.solve  # the solver module and the scipy modules it imports lazily
    import scipy.linalg, scipy.sparse, scipy.sparse.linalg  # noqa: E401
scipy_before = "scipy.linalg" in sys.modules
c0 = time.process_time()
t0 = time.perf_counter()
b = softsym.equivariant_basis(hom, cache=spec["cache"])
t1 = time.perf_counter()
c1 = time.process_time()
out = {"seconds": t1 - t0, "cpu_seconds": c1 - c0, "dim": b.dim, "size": b.size, "group": G.name, "scipy_preloaded": scipy_before,
       "blocks": b.blocks,
       "max_residual": max([s["residual"] for s in b.spectrum.values()] or [0.0])}
if spec.get("second"):
    t0 = time.perf_counter()
    b2 = softsym.equivariant_basis(hom, cache=spec["cache"])
    out["second_seconds"] = time.perf_counter() - t0
    out["second_dim"] = b2.dim
print(TAG + json.dumps(out, default=str), flush=True)
"""

_EMLP_WORKER = r"""
import json, os, sys, time
import numpy as np
import jax
import emlp
from emlp.reps import V, T, Scalar
from emlp.groups import SO, O, Lorentz, SO13, S
spec = json.loads(sys.argv[1])
ns = {"V": V, "T": T, "Scalar": Scalar, "SO": SO, "O": O, "Lorentz": Lorentz, "SO13": SO13, "S": S}
exec(spec["setup"], ns)
rep = ns["rep"]
c0 = time.process_time()
t0 = time.perf_counter()
Q = rep.equivariant_basis()
try:
    jax.block_until_ready(Q)
except Exception:
    pass
t1 = time.perf_counter()
c1 = time.process_time()
print(TAG + json.dumps({"seconds": t1 - t0, "cpu_seconds": c1 - c0, "shape": [int(x) for x in Q.shape], "type": type(Q).__name__,
                        "emlp": getattr(emlp, "__version__", "?"), "jax": jax.__version__}), flush=True)
"""


def _src_root() -> str:
    import softsym

    return str(Path(softsym.__file__).resolve().parents[1])


def _run_worker(python: str, code: str, spec: dict, env: dict, timeout: float) -> dict:
    """Run a worker script in a fresh process; returns its JSON, or {"error": ..., "timeout": bool}."""
    code = code.replace("TAG", repr(_RESULT_TAG))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([python, "-c", code, json.dumps(spec)], env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:g} s", "timeout": True, "wall_seconds": time.perf_counter() - t0}
    except OSError as exc:
        return {"error": f"cannot start {python}: {exc}", "timeout": False}
    wall = time.perf_counter() - t0
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_TAG):
            out = json.loads(line[len(_RESULT_TAG):])
            out["wall_seconds"] = wall
            return out
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
    return {"error": f"exit status {proc.returncode}: " + " | ".join(tail), "timeout": False, "wall_seconds": wall}


#: Extra environment of every benchmark subprocess (thread limits set by ``run(blas_threads=...)``).
_THREAD_ENV: Dict[str, str] = {}


def thread_env(threads: Optional[int]) -> Dict[str, str]:
    """Environment limiting BLAS / OpenMP / torch / XLA thread pools to ``threads`` (None: library defaults)."""
    if not threads:
        return {}
    t = str(int(threads))
    env = {k: t for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if int(threads) == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


def _softsym_env(cache_dir: str) -> dict:
    env = dict(os.environ)
    env.update(_THREAD_ENV)
    env["SOFTSYM_CACHE"] = cache_dir
    src = _src_root()
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _softsym_spec(case: Case, cache: bool, second: bool = False, preload: bool = False) -> dict:
    return {"group": case.group, "rep_in": case.rep_in, "rep_out": case.rep_out, "cache": cache, "second": second,
            "preload": preload}


def measure_cold(case: Case, runs: int, timeout: float = 1800.0, solve_only: bool = True) -> dict:
    """Min over ``runs`` fresh processes of equivariant_basis(hom, cache=False), timed after ALL imports
    (torch, softsym and the solver module with its scipy imports), with the disk cache off.

    With ``solve_only`` one more fresh process times the same call *including* the solver's lazy imports
    (scipy is imported on the first solve), reported beside the headline figure as a diagnostic.
    """
    results = []
    with tempfile.TemporaryDirectory(prefix="softsym-bench-cold-") as tmp:
        for _ in range(max(1, runs)):
            results.append(_run_worker(sys.executable, _SOFTSYM_WORKER, _softsym_spec(case, False, preload=True),
                                       _softsym_env(tmp), timeout))
        lazy = (_run_worker(sys.executable, _SOFTSYM_WORKER, _softsym_spec(case, False, preload=False),
                            _softsym_env(tmp), timeout) if solve_only else {"error": "not run"})
    ok = [r for r in results if "error" not in r]
    out = {"runs": [r.get("seconds") for r in results], "cpu_runs": [r.get("cpu_seconds") for r in results],
           "errors": [r["error"] for r in results if "error" in r],
           "with_lazy_imports_seconds": lazy.get("seconds"), "with_lazy_imports_cpu_seconds": lazy.get("cpu_seconds")}
    if ok:
        best = min(ok, key=lambda r: r["seconds"])
        out.update(seconds=best["seconds"], cpu_seconds=best["cpu_seconds"], dim=best["dim"], size=best["size"], blocks=best["blocks"],
                   paths=sorted({b["path"] for b in best["blocks"]}), max_residual=best["max_residual"],
                   scipy_preloaded=best["scipy_preloaded"], dims=sorted({r["dim"] for r in ok}))
    return out


def measure_warm(case: Case, runs: int, timeout: float = 1800.0) -> dict:
    """Fill a temporary cache in one process, then time cache hits in fresh processes (and in-process)."""
    with tempfile.TemporaryDirectory(prefix="softsym-bench-warm-") as tmp:
        env = _softsym_env(tmp)
        fill = _run_worker(sys.executable, _SOFTSYM_WORKER, _softsym_spec(case, True), env, timeout)
        if "error" in fill:
            return {"errors": [f"populating run: {fill['error']}"]}
        results = [_run_worker(sys.executable, _SOFTSYM_WORKER, _softsym_spec(case, True, second=True), env, timeout)
                   for _ in range(max(1, runs))]
    ok = [r for r in results if "error" not in r]
    out = {"populate_seconds": fill["seconds"], "runs": [r.get("seconds") for r in results],
           "errors": [r["error"] for r in results if "error" in r]}
    if ok:
        best = min(ok, key=lambda r: r["seconds"])
        out.update(seconds=best["seconds"], in_process_seconds=min(r["second_seconds"] for r in ok),
                   dim=best["dim"], dims=sorted({r["dim"] for r in ok} | {r["second_dim"] for r in ok}))
    return out


_DENSE_WORKER = r"""
import json, sys
import softsym
from softsym.bench.solve import calibrate_dense, dense_baseline
spec = json.loads(sys.argv[1])
if spec.get("calibrate"):
    out = calibrate_dense(spec["calibrate"])
else:
    G = softsym.group(spec["group"])
    hom = softsym.Hom(softsym.rep(spec["rep_in"], G), softsym.rep(spec["rep_out"], G))
    out = dense_baseline(hom)
print(TAG + json.dumps(out), flush=True)
"""


def measure_dense(case: Case, timeout: float, hom=None) -> dict:
    """The dense baseline of a case: in this process when ``hom`` is given, else in a fresh process (which then
    gets the same thread limits as the softsym subprocesses)."""
    if hom is not None:
        try:
            return dense_baseline(hom)
        except MemoryError:
            return {"status": "error", "reason": "out of memory"}
    with tempfile.TemporaryDirectory(prefix="softsym-bench-dense-") as tmp:
        res = _run_worker(sys.executable, _DENSE_WORKER, _softsym_spec(case, False), _softsym_env(tmp), timeout)
    if "error" in res:
        return {"status": "timeout" if res.get("timeout") else "error", "reason": res["error"]}
    return res


def measure_emlp(case: Case, python: str, timeout: float) -> dict:
    """EMLP's cold equivariant_basis() in a fresh process of ``python`` (TQDM_DISABLE=1)."""
    env = dict(os.environ)
    env.update(_THREAD_ENV)
    env["TQDM_DISABLE"] = "1"
    for var in ("PYTHONPATH", "SOFTSYM_CACHE", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(var, None)
    res = _run_worker(python, _EMLP_WORKER, {"setup": case.emlp_setup}, env, timeout)
    if "error" in res:
        return {"status": "timeout" if res.get("timeout") else "error", "error": res["error"], "timeout_s": timeout}
    return {"status": "ran", "seconds": res["seconds"], "cpu_seconds": res["cpu_seconds"], "shape": res["shape"], "basis_dim": res["shape"][-1],
            "type": res["type"], "emlp_version": res["emlp"], "jax_version": res["jax"],
            "wall_seconds": res["wall_seconds"]}


# ------------------------------------------------------------------------------------------- dense baseline
def _generators(group):
    import numpy as np

    lie = [a / np.linalg.norm(a) for a in group.lie_np if np.linalg.norm(a) > 0]
    return lie, list(group.discrete_np)


def calibrate_dense(n: int = CALIBRATION_N, repeats: int = 3) -> dict:
    """Per-n^3 costs of one Gram product C_i^T C_i (n x n blocks) and of eigh of an n x n symmetric matrix."""
    import numpy as np
    import scipy.linalg

    rng = np.random.default_rng(0)
    c = rng.standard_normal((n, n))
    scipy.linalg.eigh(c.T @ c)  # warm-up (BLAS threads, LAPACK workspace queries)
    t_gram, t_eig = float("inf"), float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        g = c.T @ c
        t_gram = min(t_gram, time.perf_counter() - t0)
        t0 = time.perf_counter()
        scipy.linalg.eigh(g)
        t_eig = min(t_eig, time.perf_counter() - t0)
    return {"n": n, "gram_seconds": t_gram, "eigh_seconds": t_eig, "c_gram": t_gram / n**3, "c_eig": t_eig / n**3}


def estimate_dense(n: int, k: int, cal: dict, dtype_bytes: int = 8) -> Tuple[float, int]:
    """(seconds, bytes) the dense baseline of an n-dim rep with k generators is expected to take."""
    seconds = (k * cal["c_gram"] + cal["c_eig"]) * float(n) ** 3 * (4.0 if dtype_bytes == 16 else 1.0)
    nbytes = (k + 4) * n * n * dtype_bytes  # C, C^T C, eigenvectors and workspace
    return seconds, nbytes


def dense_baseline(hom) -> dict:
    """Dense constraint of the whole rep from its structured operators; time of eigh(C^T C) and its null dim."""
    import numpy as np
    import scipy.linalg

    group = hom.group
    n = hom.size
    lie, disc = _generators(group)
    t0 = time.perf_counter()
    rows = [hom.drho(a).dense().numpy() for a in lie]
    eye = np.eye(n)
    rows += [hom.rho(h).dense().numpy() - eye for h in disc]
    del eye
    c = np.concatenate(rows, axis=0) if rows else np.zeros((0, n))
    del rows
    build = time.perf_counter() - t0
    w = np.eye(64) + 0.0
    scipy.linalg.eigh(w.T @ w)  # wake the BLAS threads up so the timing is not charged for it
    c0 = time.process_time()
    t0 = time.perf_counter()
    gram = c.conj().T @ c
    del c
    evals, _ = scipy.linalg.eigh(gram, overwrite_a=True)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    top = max(float(evals.max()) if len(evals) else 0.0, 0.0)
    thr = (DENSE_REL_TOL * np.sqrt(top)) ** 2
    dim = int((evals < thr).sum())
    above = evals[evals >= thr]
    gap = float(above.min() / max(thr, 1e-300)) if len(above) else float("inf")
    return {"status": "ran", "seconds": seconds, "cpu_seconds": cpu, "build_seconds": build, "dim": dim,
            "generators": len(lie) + len(disc), "threshold": thr, "gap_over_threshold": gap}


# ------------------------------------------------------------------------------------------- targets
def _fmt_s(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if x < 1.0:
        return f"{x * 1e3:.1f} ms"
    return f"{x:.2f} s"


def _fmt_ratio(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if x < 10:
        return f"{x:.2g}x"
    return f"{x:,.0f}x"


def _targets(case: Case, row: dict) -> List[dict]:
    """Target checks of one case: dicts with name, ok (True/False/None = not measurable), detail."""
    out = []
    cold = row["cold"].get("seconds")
    if cold is None:
        return [{"name": "cold solve", "ok": False, "detail": "softsym cold run failed"}]
    emlp = row.get("emlp") or {}
    ref, how = None, None
    if emlp.get("status") == "ran":
        ref, how = emlp["seconds"], "in-run EMLP" + ("" if emlp.get("dim_match", True) else " (its basis dim differs!)")
    elif emlp.get("status") == "timeout":
        ref, how = emlp["timeout_s"], "in-run EMLP timeout (lower bound)"
    elif case.published_emlp:
        ref, how = case.published_emlp[0], "published EMLP low"
    if ref is not None:
        ratio = ref / cold
        out.append({"name": f"{EMLP_SPEEDUP_TARGET:g}x EMLP", "ok": ratio >= EMLP_SPEEDUP_TARGET,
                    "value": ratio, "detail": f"{_fmt_ratio(ratio)} vs {how} {ref:.2f} s"})
    else:
        out.append({"name": f"{EMLP_SPEEDUP_TARGET:g}x EMLP", "ok": None, "detail": "no EMLP figure"})
    if case.cold_target_s is not None:
        out.append({"name": f"cold<{case.cold_target_s:g}s", "ok": cold < case.cold_target_s, "value": cold,
                    "detail": f"cold {_fmt_s(cold)}"})
    warm = row["warm"].get("seconds")
    out.append({"name": "warm<50ms", "ok": warm is not None and warm < WARM_TARGET_S, "value": warm,
                "detail": f"fresh-process cache hit {_fmt_s(warm)}"})
    dense = row["dense"]
    d_s = dense.get("seconds") if dense.get("status") == "ran" else dense.get("est_seconds")
    est = dense.get("status") != "ran"
    if d_s is not None:
        ratio = d_s / cold
        out.append({"name": ">=dense", "ok": ratio >= 1.0, "value": ratio,
                    "detail": f"dense/softsym {_fmt_ratio(ratio)}" + (" (dense estimated)" if est else "")})
        if row["map_dim"] >= DENSE_SPEEDUP_FROM_DIM:
            out.append({"name": f"{DENSE_SPEEDUP_TARGET:g}x dense", "ok": ratio >= DENSE_SPEEDUP_TARGET,
                        "value": ratio, "detail": f"dense/softsym {_fmt_ratio(ratio)}" + (" (dense estimated)" if est else "")})
    return out


# ------------------------------------------------------------------------------------------- run
def _results_dir() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "benchmarks").is_dir() and (parent / "pyproject.toml").is_file():
            return parent / "benchmarks" / "results"
    return Path.cwd() / "benchmarks" / "results"


def _out_paths(out: Optional[str], stamp: str) -> List[Path]:
    name = f"basis_solve-{stamp}.json"
    if out is None:
        d = _results_dir()
        return [d / name, d / "basis_solve-latest.json"]
    p = Path(out)
    if p.is_dir() or str(out).endswith(("/", os.sep)):
        return [p / name]
    return [p]


def _jsonable(obj):
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not (obj == obj and abs(obj) != float("inf")):
        return str(obj)
    return obj


def run(emlp_python: Optional[str] = None, only: Optional[Sequence[str]] = None, dense_cap: float = 30.0,
        out: Optional[str] = None, *, cold_runs: int = 2, warm_runs: int = 2, emlp_timeout: float = 300.0,
        calibration_n: int = CALIBRATION_N, solve_only: bool = True, blas_threads: Optional[int] = None,
        console=None) -> dict:
    """Run the basis-solve benchmark, print the table and write the JSON; returns the result dict.

    Parameters
    ----------
    emlp_python : python executable of a separate environment with EMLP installed (None: no EMLP runs; the
        published EMLP figures are used for the speed-up target).
    only : case names to run (default all; see :data:`CASES` and :func:`resolve_cases`).
    dense_cap : skip the dense baseline of a case whose estimated time exceeds this many seconds.
    out : JSON path (or an existing directory); default ``benchmarks/results/basis_solve-<UTC time>.json`` plus
        ``basis_solve-latest.json``.
    cold_runs, warm_runs : fresh processes per cold / warm figure (the minimum is reported).
    emlp_timeout : seconds per EMLP case before it is recorded as a timeout.
    calibration_n : size of the measured problem that calibrates the dense-time estimate (the estimate is then
        scaled by measured/estimated of the largest dense run so far).
    solve_only : also time the cold solve including the solver's lazy scipy imports (one more process, diagnostic).
    blas_threads : limit the BLAS/OpenMP/XLA thread pools of every subprocess (softsym, dense, EMLP) to this many
        threads; None keeps the libraries' defaults (one thread per core).
    """
    from rich.console import Console
    from rich.table import Table

    import softsym
    from .. import defaults

    if console is None:
        console = Console()
        if not console.is_terminal:  # piped or captured: keep the table readable
            console = Console(width=200)
    cases = resolve_cases(only)
    started = _dt.datetime.now(_dt.timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")

    machine = machine_info()
    console.print("[bold]softsym basis-solve benchmark[/]")
    console.print("machine: " + ", ".join(f"{k}={v}" for k, v in machine.items() if v is not None), highlight=False)
    console.print("solver defaults: " + ", ".join(f"{k}={v}" for k, v in defaults.as_dict().items()), highlight=False)
    global _THREAD_ENV
    _THREAD_ENV = thread_env(blas_threads)
    if _THREAD_ENV:
        console.print("thread limits for every subprocess: " + " ".join(f"{k}={v}" for k, v in _THREAD_ENV.items()),
                      highlight=False)
    if not _THREAD_ENV:  # same environment as this process: calibrate (and run the dense baseline) in-process
        cal = calibrate_dense(int(calibration_n))
    else:
        with tempfile.TemporaryDirectory(prefix="softsym-bench-cal-") as tmp:
            cal = _run_worker(sys.executable, _DENSE_WORKER, {"calibrate": int(calibration_n)}, _softsym_env(tmp),
                              600.0)
    if "error" in cal:
        raise RuntimeError(f"dense calibration failed: {cal['error']}")
    console.print(f"dense-time model: (K * {cal['c_gram']:.3g} + {cal['c_eig']:.3g}) * n^3 s "
                  f"(calibrated at n={cal['n']}: C^T C {_fmt_s(cal['gram_seconds'])}, eigh {_fmt_s(cal['eigh_seconds'])}); "
                  f"cap {dense_cap:g} s", highlight=False)
    if emlp_python:
        console.print(f"EMLP: {emlp_python} (fresh process per case, timeout {emlp_timeout:g} s)", highlight=False)
    else:
        console.print("EMLP: not run (pass --emlp PYTHON); published EMLP 1.0.3 figures used for targets",
                      highlight=False)

    rows = []
    correction, correction_n = 1.0, cal["n"]  # measured/estimated of the largest dense run so far (never < 1)
    for case in cases:
        console.print(f"[cyan]{case.name}[/] ...", highlight=False)
        group = softsym.group(case.group)
        hom = softsym.Hom(softsym.rep(case.rep_in, group), softsym.rep(case.rep_out, group))
        row: dict = {"name": case.name, "group": group.name, "rep_in": case.rep_in, "rep_out": case.rep_out,
                     "map_dim": hom.size, "published_emlp_s": list(case.published_emlp) if case.published_emlp else None}
        row["loadavg_before"] = _loadavg()
        row["cold"] = measure_cold(case, cold_runs, solve_only=solve_only)
        console.print(f"  cold {_fmt_s(row['cold'].get('seconds'))} (runs: "
                      + ", ".join(_fmt_s(x) for x in row["cold"]["runs"]) + "; including the solver's lazy scipy "
                      f"imports: {_fmt_s(row['cold'].get('with_lazy_imports_seconds'))})", highlight=False)
        for err in row["cold"]["errors"]:
            console.print(f"  [red]cold run failed[/]: {err}", highlight=False)
        row["warm"] = measure_warm(case, warm_runs)
        console.print(f"  warm {_fmt_s(row['warm'].get('seconds'))} fresh process, "
                      f"{_fmt_s(row['warm'].get('in_process_seconds'))} in-process", highlight=False)
        row["basis_dim"] = row["cold"].get("dim")

        # dense baseline (in this process)
        lie, disc = _generators(group)
        k = len(lie) + len(disc)
        raw_s, est_b = estimate_dense(hom.size, k, cal, 16 if group.is_complex else 8)
        est_s = raw_s * correction
        avail = _mem_info().get("MemAvailable")
        dense = {"est_seconds": est_s, "est_seconds_uncorrected": raw_s, "correction": correction,
                 "est_bytes": est_b, "generators": k}
        if est_s > dense_cap:
            dense.update(status="skipped", reason=f"estimated {est_s:.3g} s > cap {dense_cap:g} s")
        elif avail is not None and est_b > DENSE_MEMORY_FRACTION * avail:
            dense.update(status="skipped", reason=f"needs ~{est_b / 1e9:.1f} GB, {avail / 1e9:.1f} GB available")
        else:
            dense.update(measure_dense(case, timeout=max(600.0, 10 * dense_cap), hom=None if _THREAD_ENV else hom))
        row["dense"] = dense
        if dense["status"] == "ran" and hom.size >= correction_n and raw_s > 0:
            correction, correction_n = max(1.0, dense["seconds"] / raw_s), hom.size
        if dense["status"] in ("timeout", "error"):
            console.print(f"  [red]dense {dense['status']}[/]: {dense['reason']}", highlight=False)
        elif dense["status"] == "ran":
            match = dense["dim"] == row["basis_dim"]
            dense["dim_match"] = match
            console.print(f"  dense {_fmt_s(dense['seconds'])} (est. {_fmt_s(est_s)}), dim {dense['dim']}", highlight=False)
            if not match:
                console.print(f"  [bold red]DIMENSION MISMATCH[/]: dense baseline finds {dense['dim']}, softsym "
                              f"{row['basis_dim']} ({case.name})", highlight=False)
        else:
            console.print(f"  dense skipped: {dense['reason']}", highlight=False)
        if case.expected_dim is not None and row["basis_dim"] is not None and row["basis_dim"] != case.expected_dim:
            console.print(f"  [bold red]UNEXPECTED DIMENSION[/]: softsym {row['basis_dim']}, expected "
                          f"{case.expected_dim}", highlight=False)
        row["expected_dim"] = case.expected_dim

        if emlp_python:
            row["emlp"] = measure_emlp(case, emlp_python, emlp_timeout)
            e = row["emlp"]
            if e["status"] == "ran":
                console.print(f"  EMLP {_fmt_s(e['seconds'])}, basis {e['shape']}", highlight=False)
                e["dim_match"] = row["basis_dim"] is not None and e["basis_dim"] == row["basis_dim"]
                if row["basis_dim"] is not None and e["basis_dim"] != row["basis_dim"]:
                    console.print(f"  [bold red]EMLP DIMENSION DIFFERS[/]: EMLP {e['basis_dim']}, softsym "
                                  f"{row['basis_dim']}", highlight=False)
            else:
                console.print(f"  EMLP {e['status']}: {e['error']}", highlight=False)
        else:
            row["emlp"] = {"status": "not run"}

        cold = row["cold"].get("seconds")
        row["dense_over_softsym"] = (dense["seconds"] / cold) if cold and dense["status"] == "ran" else None
        row["dense_est_over_softsym"] = (est_s / cold) if cold else None
        row["emlp_over_softsym"] = (row["emlp"]["seconds"] / cold) if cold and row["emlp"]["status"] == "ran" else None
        row["emlp_published_low_over_softsym"] = (case.published_emlp[0] / cold) if cold and case.published_emlp else None
        row["loadavg_after"] = _loadavg()
        row["targets"] = _targets(case, row)
        row["targets_met"] = all(t["ok"] is not False for t in row["targets"])
        rows.append(row)

    # ------------------------------------------------------------------ table
    table = Table(title="Equivariant basis solve: softsym vs dense baseline" + (" vs EMLP" if emlp_python else ""))
    for col, just in (("case", "left"), ("map dim", "right"), ("basis dim", "right"), ("softsym cold", "right"),
                      ("warm", "right"), ("dense", "right"), ("dense/softsym", "right"), ("EMLP", "right"),
                      ("EMLP/softsym", "right"), ("targets met?", "left")):
        table.add_column(col, justify=just)
    for row in rows:
        d = row["dense"]
        if d["status"] in ("timeout", "error"):
            dense_txt, ratio_txt = f"[red]{d['status']}[/]", "-"
        elif d["status"] == "ran":
            dense_txt = _fmt_s(d["seconds"]) + ("" if d.get("dim_match", True) else f" [red](dim {d['dim']}!)[/]")
            ratio_txt = _fmt_ratio(row["dense_over_softsym"])
        else:
            dense_txt = f"skipped, est. {d['est_seconds']:.3g} s"
            ratio_txt = f"~{_fmt_ratio(row['dense_est_over_softsym'])} (est.)" if row["dense_est_over_softsym"] else "-"
        e = row["emlp"]
        if e["status"] == "ran":
            emlp_txt = _fmt_s(e["seconds"]) + ("" if e.get("dim_match", True) else f"\n[red](dim {e['basis_dim']:,}!)[/]")
            emlp_ratio = _fmt_ratio(row["emlp_over_softsym"])
        elif e["status"] == "timeout":
            emlp_txt = f"timeout >{e['timeout_s']:g} s"
            emlp_ratio = ">" + _fmt_ratio(e["timeout_s"] / row["cold"]["seconds"]) if row["cold"].get("seconds") else "-"
        elif e["status"] == "error":
            emlp_txt, emlp_ratio = "[red]error[/]", "-"
        elif row["published_emlp_s"]:
            lo, hi = row["published_emlp_s"]
            emlp_txt = f"pub. {lo:g}-{hi:g} s"
            emlp_ratio = f"{_fmt_ratio(row['emlp_published_low_over_softsym'])} (pub. low)"
        else:
            emlp_txt, emlp_ratio = "-", "-"
        marks = []
        for t in row["targets"]:
            if t["ok"] is None:
                continue
            marks.append(("[green]✓[/]" if t["ok"] else "[bold red]✗[/]") + t["name"])
        warm_txt = f"{_fmt_s(row['warm'].get('seconds'))}\n({_fmt_s(row['warm'].get('in_process_seconds'))} in-proc)"
        basis_txt = f"{row['basis_dim']:,}" if row["basis_dim"] is not None else "[red]failed[/]"
        cold_txt = _fmt_s(row["cold"].get("seconds"))
        if row["cold"].get("with_lazy_imports_seconds") is not None:
            lazy = _fmt_s(row["cold"]["with_lazy_imports_seconds"])
            cold_txt += f"\n({lazy} in one more run incl. the lazy scipy import)"
        table.add_row(row["name"], f"{row['map_dim']:,}", basis_txt, cold_txt, warm_txt,
                      dense_txt, ratio_txt, emlp_txt, emlp_ratio, " ".join(marks))
    console.print(table)

    missed = [f"{r['name']}: {t['name']} ({t['detail']})" for r in rows for t in r["targets"] if t["ok"] is False]
    mismatches = [r["name"] for r in rows if r["dense"].get("dim_match") is False]
    if mismatches:
        console.print(f"[bold red]dense/softsym DIMENSION MISMATCH in: {', '.join(mismatches)}[/]")
    if missed:
        console.print("[bold red]targets missed:[/]\n  " + "\n  ".join(missed), highlight=False)
    else:
        console.print("[bold green]all targets met[/]")

    loads = [r["loadavg_before"] for r in rows if r.get("loadavg_before") is not None]
    if loads and max(loads) > 0.5 * (os.cpu_count() or 1):
        console.print(f"[yellow]warning[/]: the machine was busy during the run (1-min load average up to "
                      f"{max(loads):.2f} on {os.cpu_count()} cores); timings include that contention", highlight=False)
    result = {
        "benchmark": "basis_solve",
        "timestamp_utc": started.isoformat(),
        "command": list(sys.argv),
        "machine": machine,
        "defaults": defaults.as_dict(),
        "settings": {"blas_threads": blas_threads, "thread_env": dict(_THREAD_ENV), "dense_cap_s": dense_cap, "cold_runs": cold_runs, "warm_runs": warm_runs,
                     "emlp_python": emlp_python, "emlp_timeout_s": emlp_timeout, "dense_rel_tol": DENSE_REL_TOL,
                     "cases": [c.name for c in cases]},
        "dense_calibration": dict(cal, final_correction=correction),
        "targets": {"emlp_speedup": EMLP_SPEEDUP_TARGET, "warm_s": WARM_TARGET_S,
                    "dense_speedup": DENSE_SPEEDUP_TARGET, "dense_speedup_from_dim": DENSE_SPEEDUP_FROM_DIM,
                    "cold_s": {c.name: c.cold_target_s for c in cases if c.cold_target_s is not None}},
        "cases": rows,
        "summary": {"all_targets_met": not missed, "missed": missed, "dense_dim_mismatches": mismatches,
                    "total_seconds": (_dt.datetime.now(_dt.timezone.utc) - started).total_seconds()},
    }
    text = json.dumps(_jsonable(result), indent=2)
    paths = _out_paths(out, stamp)
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text + "\n")
    result["written"] = [str(p) for p in paths]
    console.print("wrote " + ", ".join(str(p) for p in paths), highlight=False)
    return result
