"""User data as a :class:`~softsym.data.synthetic.Task`: arrays, NPZ or CSV files, validated against the reps.

The inputs x (N, rep_in.size) and targets y (N, rep_out.size) get a seeded train / val / test split (unless the
file or the caller gives the splits) and an equivariance-preserving normalisation computed on the training split:
one scale per tensor-block *copy* of the rep (the RMS of that copy's entries; a group acts on every copy as a
whole, so a scalar factor per copy commutes with it), and for the targets additionally the mean of every scalar
(invariant) output. Models see normalised data; reported MSE is on the raw targets, as for the synthetic tasks.

File layouts:

* ``.npz`` with ``x`` and ``y`` (split here), or with ``x_train``, ``y_train`` and optionally ``x_val``/``y_val``
  and ``x_test``/``y_test`` (missing splits are carved out of the training arrays);
* ``.csv`` / ``.tsv`` / ``.txt``: one sample per row, the rep_in.size input columns first, then the rep_out.size
  target columns; an optional header line; commas for .csv, tabs or spaces otherwise.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import math
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import ConfigError, DataError, SoftsymError
from ..groups.base import Group
from ..groups.parse import canonical_spec, parse_group
from ..reps.algebra import rep as make_rep
from ..reps.base import Rep
from .synthetic import Task

__all__ = ["task_from_arrays", "load_task", "DATA_SUFFIXES", "VAL_FRACTION", "TEST_FRACTION"]

DATA_SUFFIXES = (".npz", ".csv", ".tsv", ".txt")
#: default split fractions when the data does not come split
VAL_FRACTION, TEST_FRACTION = 0.15, 0.15
_SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def _group_text(spec, g) -> str:
    """The spec string a Task stores (models are built from it): canonical name, or the name of a Group object
    when it parses back to the same group."""
    if isinstance(spec, str):
        return canonical_spec(spec)
    try:
        if parse_group(g.name).key == g.key:
            return g.name
    except SoftsymError:
        pass
    raise ConfigError(f"group {g.name!r} cannot be named by a spec string; pass a spec such as 'O(3)' or "
                      "'O(2)@z' (custom groups from generators are not supported for tasks yet)")


def _spec_text(spec) -> str:
    return repr(spec) if isinstance(spec, Rep) else str(spec)


def _as_matrix(a, name: str, width: int, rep_text: str, what: str) -> np.ndarray:
    """(N, width) float64 array from array-like ``a``, or a DataError saying what is wrong."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().resolve_conj().numpy()
    if np.iscomplexobj(a):  # float64 conversion would drop the imaginary parts with only a warning
        c = np.asarray(a)
        if np.any(c.imag != 0):
            raise DataError(f"{name} is complex; softsym's tasks are real: give the real data (complex groups such "
                            "as SU(n) are not supported for tasks)")
        a = c.real
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} is not numeric ({exc}); give a real array") from None
    if arr.ndim == 1 and width == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        hint = ""
        if arr.ndim > 2 and int(np.prod(arr.shape[1:])) == width:
            hint = (f"; if each sample's entries are laid out in the rep's order, flatten them with "
                    f"{name}.reshape(len({name}), -1)")
        raise DataError(f"{name} must be 2-D (samples, {width}), got shape {arr.shape}{hint}")
    if arr.shape[0] == 0:
        raise DataError(f"{name} has no samples")
    if arr.shape[1] != width:
        raise DataError(f"{name} has {arr.shape[1]} columns but {what} {rep_text} has size {width}; check the rep "
                        "(and the group's dimension) or the column layout")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.nonzero(bad.any(axis=1))[0]
        raise DataError(f"{name} has {int(bad.sum())} NaN / inf entries in {len(rows)} rows (first: row {rows[0]}, counting from 0); "
                        "drop or impute them first")
    return np.ascontiguousarray(arr)


def _block_copies(rep: Rep):
    """Index arrays (one per copy of every tensor block) of a bound rep, and whether each copy is a scalar."""
    out = []
    for comp in rep.components:
        idx = comp.indices()  # (count, block_size)
        for row in idx:
            out.append((row, len(comp.atoms) == 0))
    return out


def _normalisation(x: np.ndarray, y: np.ndarray, rin: Rep, rout: Rep, normalise: bool):
    n_in, n_out = x.shape[1], y.shape[1]
    x_scale, y_mean, y_std = np.ones(n_in), np.zeros(n_out), np.ones(n_out)
    if not normalise:
        return x_scale, y_mean, y_std
    for idx, _ in _block_copies(rin):
        s = float(np.sqrt(np.mean(x[:, idx] ** 2)))
        x_scale[idx] = s if s > 0 else 1.0
    for idx, scalar in _block_copies(rout):
        v = y[:, idx]
        if scalar:  # an invariant output may be shifted
            y_mean[idx] = float(v.mean())
            s = float(v.std())
        else:
            s = float(np.sqrt(np.mean(v ** 2)))
        y_std[idx] = s if s > 0 else 1.0
    return x_scale, y_mean, y_std


def _check_size(v, label: str) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ConfigError(f"{label} must be a positive integer, got {v!r}")
    return int(v)


def _split_sizes(n: int, n_train, n_val, n_test, need_val: bool, need_test: bool) -> Tuple[int, int, int]:
    """Sizes carved out of n samples: given ones are used, the rest from VAL/TEST_FRACTION, train the remainder."""
    n_val = (n_val if n_val is not None else max(1, round(VAL_FRACTION * n))) if need_val else 0
    n_test = (n_test if n_test is not None else max(1, round(TEST_FRACTION * n))) if need_test else 0
    need = 1 + int(need_val) + int(need_test)
    if n < need:
        raise DataError(f"only {n} sample(s): a split into train" + (" / validation" if need_val else "")
                        + (" / test" if need_test else "") + f" needs at least {need} samples; give more data"
                        + (" (or the validation / test splits as separate arrays)" if need > 1 else ""))
    if n_train is None:
        if n_val + n_test >= n:
            raise DataError(f"cannot split {n} samples: validation {n_val} + test {n_test} = {n_val + n_test} leave "
                            "no training samples; give smaller --n-val / --n-test (n_val= / n_test=) or more data")
        n_train = n - n_val - n_test
    if n_train < 1 or n_train + n_val + n_test > n:
        raise DataError(f"cannot split {n} samples into train {n_train} + validation {n_val} + test {n_test} = "
                        f"{n_train + n_val + n_test}; give fewer samples per split (--n-train / --n-val / --n-test) "
                        "or more data")
    return n_train, n_val, n_test


def _check_candidates(candidates, group_text: str, rin: Rep, rout: Rep, rep_in, rep_out) -> Tuple[str, ...]:
    """Candidate specs under their canonical names, each a real group acting on the data's spaces (the reps bound
    to it have the data's sizes) and listed once; otherwise a ConfigError saying which one and why."""
    if candidates is None or (not isinstance(candidates, str) and len(candidates) == 0):
        return (group_text,)
    if isinstance(candidates, str):
        raise ConfigError(f"candidates must be a list of group specs, got the string {candidates!r}; wrap it in a "
                          f"list: [{candidates!r}]")
    out, keys = [], {}
    for c in candidates:
        if not isinstance(c, str):
            raise ConfigError(f"candidates must be group spec strings, e.g. ['O(3)', 'O(2)@z'], got {c!r}")
        cg = parse_group(c)
        spec = canonical_spec(c)
        if cg.is_complex:
            raise ConfigError(f"candidate {spec!r} is a complex group; tasks hold real data and support real "
                              "candidate groups only")
        a, b = make_rep(rep_in, cg).size, make_rep(rep_out, cg).size
        if (a, b) != (rin.size, rout.size):
            raise ConfigError(f"candidate {spec!r} acts on R^{cg.d}: with it the reps {_spec_text(rep_in)} -> "
                              f"{_spec_text(rep_out)} have sizes {a} -> {b}, but the data has {rin.size} inputs and "
                              f"{rout.size} targets (group {group_text}); give candidates acting on the same space"
                              + (f", e.g. a subgroup embedded with '@' such as 'SO(2)@[0,1]:{d}'" if (d := parse_group(
                                  group_text).d) > 2 else ""))
        if cg.key in keys:
            raise ConfigError(f"candidate {c!r} is the same group as {keys[cg.key]!r}; list every candidate once")
        keys[cg.key] = c
        out.append(spec)
    return tuple(out)


def task_from_arrays(x: Union[np.ndarray, torch.Tensor], y: Union[np.ndarray, torch.Tensor],
                     group: Union[str, Group], rep_in: Union[str, Rep], rep_out: Union[str, Rep], *,
                     candidates: Optional[Sequence[str]] = None,
                     x_val: Optional[Union[np.ndarray, torch.Tensor]] = None,
                     y_val: Optional[Union[np.ndarray, torch.Tensor]] = None,
                     x_test: Optional[Union[np.ndarray, torch.Tensor]] = None,
                     y_test: Optional[Union[np.ndarray, torch.Tensor]] = None, n_train: Optional[int] = None,
                     n_val: Optional[int] = None, n_test: Optional[int] = None, seed: int = 0,
                     normalise: bool = True, name: str = "data", info: Optional[Dict] = None) -> Task:
    """A Task from your own arrays (numpy or torch), validated against the reps of ``group``.

    ``x`` (N, rep_in.size), ``y`` (N, rep_out.size) (1-D for a single target). Validation and test splits are
    taken from ``x_val``/``y_val``, ``x_test``/``y_test`` when given, else carved out of x, y by a permutation
    seeded with ``seed`` (sizes ``n_val``/``n_test``, default 15 % each; ``n_train`` defaults to the rest).
    ``candidates``: group specs for the soft models (default: just ``group``). ``normalise``: per-copy RMS scales
    (and scalar-output means) from the training split, see the module docstring.

    >>> import numpy as np
    >>> t = task_from_arrays(np.random.randn(40, 6), np.random.randn(40), group="O(3)", rep_in="2V", rep_out="V0")
    >>> len(t.x_train), len(t.x_val), len(t.x_test)
    (28, 6, 6)
    """
    g = parse_group(group)
    group_text = _group_text(group, g)
    if g.is_complex:
        raise ConfigError(f"{group_text} is a complex group (it acts on C^{g.d}); tasks hold real data and softsym's "
                          "models and metrics support real groups only; use a real group, e.g. 'SO(3)'")
    rin, rout = make_rep(rep_in, g), make_rep(rep_out, g)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    n_train, n_val, n_test = (_check_size(v, k) for v, k in ((n_train, "n_train"), (n_val, "n_val"),
                                                               (n_test, "n_test")))
    rin_text, rout_text = _spec_text(rep_in), _spec_text(rep_out)

    def pair(a, b, label):
        xa = _as_matrix(a, f"x{label}", rin.size, rin_text, "rep_in")
        ya = _as_matrix(b, f"y{label}", rout.size, rout_text, "rep_out")
        if len(xa) != len(ya):
            raise DataError(f"x{label} has {len(xa)} samples but y{label} has {len(ya)}; they must match row by row")
        return xa, ya

    for a, b, label in ((x_val, y_val, "_val"), (x_test, y_test, "_test")):
        if (a is None) != (b is None):
            raise DataError(f"give both x{label} and y{label}, or neither")
    xs, ys = pair(x, y, "")
    given = {lab: pair(a, b, lab) for a, b, lab in ((x_val, y_val, "_val"), (x_test, y_test, "_test"))
             if a is not None}
    for lab, size in (("_val", n_val), ("_test", n_test)):
        if lab in given and size is not None and size != len(given[lab][0]):
            raise ConfigError(f"n{lab} = {size}, but x{lab} has {len(given[lab][0])} samples; drop n{lab}")
    sizes = _split_sizes(len(xs), n_train, n_val, n_test, "_val" not in given, "_test" not in given)
    perm = np.random.default_rng([int(seed), 104729]).permutation(len(xs))
    a, b = sizes[0], sizes[0] + sizes[1]
    tr, va, te = perm[:a], perm[a:b], perm[b:b + sizes[2]]
    x_tr, y_tr = xs[tr], ys[tr]
    x_va, y_va = given.get("_val", (xs[va], ys[va]))
    x_te, y_te = given.get("_test", (xs[te], ys[te]))
    x_scale, y_mean, y_std = _normalisation(x_tr, y_tr, rin, rout, bool(normalise))
    t = lambda arr: torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))  # noqa: E731
    cands = _check_candidates(candidates, group_text, rin, rout, rep_in, rep_out)
    # what the task is made of, so that a run directory notices a changed group, rep or candidate list
    meta = {"seed": int(seed), "protocol": "emlp", "sizes": (len(x_tr), len(x_va), len(x_te)),
            "normalise": bool(normalise), "group": group_text, "rep_in": repr(rin), "rep_out": repr(rout),
            "candidates": list(cands), **(info or {})}
    return Task(name=name, group=group_text, rep_in=rin_text, rep_out=rout_text,
                x_train=t(x_tr), y_train=t(y_tr), x_val=t(x_va), y_val=t(y_va), x_test=t(x_te), y_test=t(y_te),
                x_scale=t(x_scale), y_mean=t(y_mean), y_std=t(y_std), candidates=cands, true_groups=(), info=meta)


def _decode(raw: bytes, path: Path) -> str:
    """Text of a table file: UTF-8 (with or without a byte-order mark) or UTF-16 with a BOM; undecodable bytes
    are replaced (they only matter in a header). Binary files are refused."""
    if raw.startswith(codecs.BOM_UTF8):
        return raw[len(codecs.BOM_UTF8):].decode("utf-8", errors="replace")
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16", errors="replace")
    if b"\x00" in raw[:65536]:
        raise DataError(f"{path} is not a text table (it contains NUL bytes: binary, or UTF-16 without a byte-order "
                        "mark); save it as UTF-8 text with one sample per row, or as an .npz")
    return raw.decode("utf-8", errors="replace")


#: delimiters tried for a table, the file type's own first: ',' (.csv), tab (.tsv), whitespace (None, .txt)
_DELIMITERS = {".csv": (",", ";", "\t", None), ".tsv": ("\t", ",", ";", None), ".txt": (None, ",", ";", "\t")}


def _split(line: str, delimiter: Optional[str]) -> list:
    """Fields of one line: quoted fields ("1.5") are unquoted, a single trailing delimiter is ignored."""
    if delimiter is None:
        parts = [v.strip().strip("\"'") for v in line.split()]
    else:
        parts = [v.strip() for v in next(csv.reader([line], delimiter=delimiter, skipinitialspace=True))]
    if len(parts) > 1 and parts[-1] == "":  # "1,2,3," (spreadsheet exports)
        parts = parts[:-1]
    return parts


def _to_float(v: str) -> float:
    if not v:
        return float("nan")  # an empty field: reported as a missing value
    try:
        return float(v)
    except ValueError:
        if _decimal_comma(v):  # "1,5", as spreadsheets write in many locales (';'-separated or quoted)
            return float(v.replace(",", "."))
        raise


def _decimal_comma(v: str) -> bool:
    return v.count(",") == 1 and "." not in v and _is_number(v.replace(",", "."))


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _read_table(path: Path, raw: bytes, n_cols: int) -> np.ndarray:
    """(rows, n_cols) float64 table from a text file; delimiter, header line, quotes, BOM, Windows line ends,
    trailing delimiters and decimal commas are handled; anything else gives a DataError naming the line."""
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(_decode(raw, path).splitlines())]
    rows = [(i, ln) for i, ln in lines if ln and not ln.startswith("#")]
    if not rows:
        raise DataError(f"{path} has no data rows")
    order = _DELIMITERS.get(path.suffix.lower(), _DELIMITERS[".txt"])
    # the delimiter that splits the last row (always data) into the expected number of columns, else the type's own
    delimiter = next((d for d in order if len(_split(rows[-1][1], d)) == n_cols), order[0])

    def number(v: str) -> bool:  # "0.5", "nan", or a decimal comma "0,5"
        return _is_number(v) or _decimal_comma(v)

    def header(line: str) -> bool:  # column names: no field is a finite number and some field is no number at all
        parts = _split(line, delimiter)
        return (not any(number(v) and math.isfinite(_to_float(v)) for v in parts)
                and not all(number(v) for v in parts))

    if header(rows[0][1]):
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path} has a header but no data rows")
    sep = {",": "commas", ";": "semicolons", "\t": "tabs", None: "whitespace"}[delimiter]
    if len(rows) > 1000:  # fast path for large files; any irregularity is reported by the exact reader below
        try:
            table = np.loadtxt([ln for _, ln in rows], delimiter=delimiter, dtype=np.float64, ndmin=2)
            if table.shape[1] == n_cols:
                return _finite_table(path, table, rows)
        except ValueError:
            pass
    table = np.empty((len(rows), n_cols), dtype=np.float64)
    for k, (lineno, line) in enumerate(rows):
        try:
            parts = _split(line, delimiter)
        except csv.Error as exc:
            raise DataError(f"{path}, line {lineno}: cannot split the row ({exc})") from None
        if len(parts) != n_cols:
            raise DataError(f"{path}, line {lineno}: data row {k + 1} has {len(parts)} columns, expected {n_cols} "
                            f"(rep_in + rep_out sizes, separated by {sep}); one sample per row, inputs first, then "
                            "targets")
        try:
            table[k] = [_to_float(v) for v in parts]
        except ValueError:
            bad = next(v for v in parts if v and not _is_number(v) and not _decimal_comma(v))
            raise DataError(f"{path}, line {lineno}: data row {k + 1} has a non-numeric entry {bad!r}; every entry "
                            "after the optional header line must be a number") from None
    return _finite_table(path, table, rows)


def _finite_table(path: Path, table: np.ndarray, rows) -> np.ndarray:
    """``table``, or a DataError naming the file line of its first NaN / inf entry (as the other text-file
    errors do, rather than an array row index)."""
    bad = ~np.isfinite(table)
    if bad.any():
        bad_rows = np.nonzero(bad.any(axis=1))[0]
        k = int(bad_rows[0])
        col = int(np.nonzero(bad[k])[0][0])
        raise DataError(f"{path}, line {rows[k][0]}: data row {k + 1} has a NaN / inf entry (column {col + 1}); "
                        f"{int(bad.sum())} such entries in {len(bad_rows)} rows in all: drop or impute them first")
    return table


def load_task(path: Union[str, Path], group: Union[str, Group], rep_in: Union[str, Rep], rep_out: Union[str, Rep],
              *, candidates: Optional[Sequence[str]] = None,
              n_train: Optional[int] = None, n_val: Optional[int] = None, n_test: Optional[int] = None,
              seed: int = 0, normalise: bool = True) -> Task:
    """A Task from an NPZ or CSV file (layouts in the module docstring); see :func:`task_from_arrays`.

    The task's ``info`` records the file and a hash of its bytes, so a resumed run notices changed data.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {p} does not exist")
    if p.is_dir():
        raise DataError(f"data path {p} is a directory; give an .npz or .csv file")
    if p.suffix.lower() not in DATA_SUFFIXES:
        raise DataError(f"data file {p} has an unsupported type {p.suffix!r}; use one of {', '.join(DATA_SUFFIXES)}")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read data file {p}: {exc.strerror or exc}") from None
    if not raw.strip():
        raise DataError(f"data file {p} is empty")
    info = {"source": str(p), "sha256": hashlib.sha256(raw).hexdigest()[:16]}
    g = parse_group(group)
    rin, rout = make_rep(rep_in, g), make_rep(rep_out, g)
    common = dict(group=group, rep_in=rep_in, rep_out=rep_out, candidates=candidates, n_train=n_train, n_val=n_val,
                  n_test=n_test, seed=seed, normalise=normalise, name=f"data:{p.name}", info=info)
    if p.suffix.lower() == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except ValueError as exc:
            if raw[:2] != b"PK":  # np.load falls back to unpickling anything that is not a zip archive
                raise DataError(f"cannot read {p} as an .npz archive: it is not a zip file written by numpy.savez; "
                                "save the arrays with numpy.savez(path, x=x, y=y), or give a text table a .csv / .txt "
                                "name") from None
            if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                raise DataError(f"{p} holds object arrays (Python objects, e.g. lists of rows or None values), which "
                                "are not loaded for safety; save numeric arrays instead, e.g. "
                                "numpy.savez(path, x=np.asarray(x, dtype=float), y=...)") from None
            raise DataError(f"cannot read {p} as an .npz archive ({exc})") from None
        except Exception as exc:  # zipfile / format errors
            raise DataError(f"cannot read {p} as an .npz archive ({type(exc).__name__}: {exc})") from None
        keys = set(arrays)
        if {"x", "y"} <= keys and keys & set(_SPLIT_KEYS):
            raise DataError(f"{p} holds both 'x', 'y' and split arrays ({', '.join(sorted(keys & set(_SPLIT_KEYS)))}); "
                            "which are the data is ambiguous: keep either 'x' and 'y' (split here) or the split arrays")
        if {"x", "y"} <= keys:
            return _naming_file(p, lambda: task_from_arrays(arrays["x"], arrays["y"], **common))
        if {"x_train", "y_train"} <= keys:
            return _naming_file(p, lambda: task_from_arrays(
                arrays["x_train"], arrays["y_train"], x_val=arrays.get("x_val"), y_val=arrays.get("y_val"),
                x_test=arrays.get("x_test"), y_test=arrays.get("y_test"), **common))
        raise DataError(f"{p} holds arrays {sorted(keys) or 'none'}; expected 'x' and 'y', or "
                        f"{', '.join(_SPLIT_KEYS)} (val / test optional)")
    table = _read_table(p, raw, rin.size + rout.size)
    return _naming_file(p, lambda: task_from_arrays(table[:, :rin.size], table[:, rin.size:], **common),
                        " (samples are data rows, counted from 0 after any header line)")


def _naming_file(path: Path, build, note: str = ""):
    """``build()``, with the file named in its DataErrors (NaN rows, shapes, splits) so the user knows where to look."""
    try:
        return build()
    except DataError as exc:
        if str(path) in str(exc):
            raise
        raise DataError(f"{path}: {exc}{note}") from None
