"""Content-addressed on-disk cache of solved basis blocks.

Key = sha256(format version, group generator bytes, block structure, tol). Each entry is one file:
a header line ``SOFTSYM-BLOCK <sha256 of payload>`` followed by an ``.npz`` payload. Writes go to a temporary
file and are renamed into place (atomic); a per-key file lock stops two processes computing the same block twice.
A truncated or corrupted entry fails its hash check, is reported once, deleted and recomputed.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..errors import CacheError
from .block import BlockSolution

__all__ = ["FORMAT_VERSION", "cache_dir", "block_key", "load", "store", "info", "clear", "locked"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_MAGIC = b"SOFTSYM-BLOCK"
_SUFFIX = ".ssb"
_memory: Dict[str, BlockSolution] = {}
_warned: set = set()


def cache_dir() -> Path:
    """``$SOFTSYM_CACHE`` if set, else the user's cache directory (platformdirs) / bases."""
    env = os.environ.get("SOFTSYM_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("softsym")) / "bases"


def block_key(group_key: str, atoms, tol: float) -> str:
    """Content hash naming one solved block."""
    text = f"v{FORMAT_VERSION}|{group_key}|{tuple(int(a) for a in atoms)}|{float(tol)!r}"
    return hashlib.sha256(text.encode()).hexdigest()


def _path(key: str) -> Path:
    return cache_dir() / f"{key}{_SUFFIX}"


def _not_a_directory(directory: Path) -> Optional[str]:
    """Why ``directory`` cannot hold the cache when it exists but is not a directory (e.g. SOFTSYM_CACHE names a
    file), else None."""
    if directory.exists() and not directory.is_dir():
        return (f"the softsym cache location {directory} exists but is not a directory; point SOFTSYM_CACHE at a "
                "directory (it is created if missing)")
    return None


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def memory_get(key: str) -> Optional[BlockSolution]:
    return _memory.get(key)


def memory_put(key: str, sol: BlockSolution) -> None:
    if len(_memory) > 512:
        _memory.pop(next(iter(_memory)))
    _memory[key] = sol


def load(key: str) -> Optional[BlockSolution]:
    """Read a block from disk; None when missing. Corrupt entries are reported once, removed, and give None."""
    path = _path(key)
    why = _not_a_directory(path.parent)
    if why:
        _warn_once(f"{why}; continuing without the disk cache")
        return None
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        _warn_once(f"softsym cache: cannot read entries in {path.parent} ({exc.strerror or exc}); recomputing them")
        return None
    try:
        header, payload = raw.split(b"\n", 1)
        magic, digest = header.split(b" ", 1)
        if magic != _MAGIC or hashlib.sha256(payload).hexdigest().encode() != digest:
            raise ValueError("hash mismatch")
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            sol = BlockSolution(
                Q=z["Q"].copy(),
                path=meta["path"],
                singular_values=z["singular_values"].copy(),
                gap=float(meta["gap"]),
                residual=float(meta["residual"]),
                seconds=float(meta["seconds"]),
                info=meta.get("info", {}),
            )
    except Exception as exc:  # any parse failure means the entry is unusable
        _warn_once(f"softsym cache: entry {path.name} is corrupted ({exc}); it was removed and will be recomputed")
        try:
            path.unlink()
        except OSError:
            pass
        return None
    return sol


def store(key: str, sol: BlockSolution) -> None:
    """Write a block atomically; failures to write only warn (the cache is an optimisation)."""
    directory = cache_dir()
    why = _not_a_directory(directory)
    if why:
        _warn_once(f"{why}; continuing without the disk cache")
        return
    if str(directory) in _unwritable:  # one failed write is enough: this process stops trying (and warning)
        return
    meta = {"path": sol.path, "gap": sol.gap, "residual": sol.residual, "seconds": sol.seconds,
            "info": _jsonable(sol.info), "format": FORMAT_VERSION}
    buf = io.BytesIO()
    np.savez(buf, Q=sol.Q, singular_values=np.asarray(sol.singular_values), meta=np.array(json.dumps(meta)))
    payload = buf.getvalue()
    data = _MAGIC + b" " + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=_SUFFIX)
        try:
            try:  # mkstemp makes the file 0600: give entries the mode of an ordinary file (a shared cache)
                os.fchmod(fd, 0o666 & ~_umask())
            except (AttributeError, OSError):
                pass
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, _path(key))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as exc:
        if exc.errno == errno.ENOENT and directory.is_dir():  # our temporary was removed (a concurrent `cache clear`)
            log.debug("cache write raced with a clear: %s", exc)
            return
        _unwritable.add(str(directory))
        _warn_once(f"softsym cache: cannot write to {directory} ({exc.strerror or exc}); continuing without the disk "
                   "cache in this process. Set SOFTSYM_CACHE to a writable directory.")


def _umask() -> int:
    """The process's umask (read once; os.umask can only be read by setting it)."""
    if not _UMASK:
        mask = os.umask(0o022)
        os.umask(mask)
        _UMASK.append(mask)
    return _UMASK[0]


_UMASK: list = []
#: cache directories a write to failed in this process: no further writes are tried there
_unwritable: set = set()
#: seconds to wait for another process's lock before saying so, and in all
_LOCK_NOTICE_SECONDS, _LOCK_TIMEOUT_SECONDS = 5.0, 600.0
#: temporaries and lock files older than this are left-overs of killed processes, which `clear` removes
_STALE_SECONDS = 600.0


@contextmanager
def locked(key: str):
    """Inter-process lock for one key (no-op when the cache directory cannot be created)."""
    try:
        from filelock import FileLock, Timeout

        directory = cache_dir()
        directory.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(directory / f".{key}.lock"))
        try:
            lock.acquire(timeout=_LOCK_NOTICE_SECONDS)
        except Timeout:
            _warn_once(f"softsym cache: waiting (up to {_LOCK_TIMEOUT_SECONDS:.0f} s) for another process that is "
                       f"solving the same basis block (lock {lock.lock_file})")
            lock.acquire(timeout=_LOCK_TIMEOUT_SECONDS - _LOCK_NOTICE_SECONDS)
    except Exception as exc:  # no lock means at worst duplicate work, never corruption (atomic rename)
        log.debug("cache lock unavailable: %s", exc)
        yield
        return
    try:
        yield
    finally:
        lock.release()
        try:
            os.unlink(lock.lock_file)
        except OSError:
            pass


def info() -> dict:
    """Location, number of entries and total size of the disk cache."""
    directory = cache_dir()
    why = _not_a_directory(directory)
    if why:
        raise CacheError(why)
    try:
        files = list(directory.glob(f"*{_SUFFIX}")) if directory.exists() else []
    except OSError as exc:
        raise CacheError(f"cannot list the softsym cache {directory}: {exc}") from None
    files = [f for f in files if not f.name.startswith(".")]
    return {"path": str(directory), "entries": len(files), "bytes": sum(f.stat().st_size for f in files),
            "format_version": FORMAT_VERSION}


def clear() -> int:
    """Delete every cache entry (and stale temporaries/locks); returns the number of entries removed."""
    directory = cache_dir()
    _memory.clear()
    why = _not_a_directory(directory)
    if why:
        raise CacheError(why)
    if not directory.exists():
        return 0
    n = 0
    now = time.time()
    try:
        for f in directory.iterdir():
            if f.suffix not in (_SUFFIX, ".lock") or not f.is_file():
                continue
            if f.name.startswith("."):  # another process's temporary or lock: only when left over long ago
                try:
                    if now - f.stat().st_mtime < _STALE_SECONDS:
                        continue
                except OSError:
                    continue
            try:
                f.unlink()
            except FileNotFoundError:
                continue
            if not f.name.startswith("."):
                n += 1
    except OSError as exc:
        raise CacheError(f"cannot clear the softsym cache {directory} ({exc}); removed {n} entries. Check the "
                         "directory's permissions") from None
    return n


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else str(v)
    return obj
