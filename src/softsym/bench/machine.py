"""Machine and library description written beside every benchmark result (to reproduce the figures)."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

__all__ = ["machine_info", "cpu_model", "loadavg"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_info() -> Dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, rest = line.split(":", 1)
            if key in ("MemTotal", "MemAvailable"):
                out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def loadavg() -> Optional[float]:
    """1-minute load average, or None where the OS does not report it."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        try:
            return float(os.getloadavg()[0])
        except (AttributeError, OSError):
            return None


def _git_commit(cwd: Optional[Path]) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except Exception:  # no git, not a checkout, ...
        return None


def machine_info(repo: Optional[Path] = None, **extra) -> dict:
    """Platform, CPU, memory, thread settings, library versions, softsym defaults and (with ``repo``) the git
    commit; ``extra`` fields (e.g. threads per run) are added as given."""
    import numpy as np
    import torch

    from .. import __version__, defaults

    mem = _mem_info()
    info = {
        "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_total_bytes": mem.get("MemTotal"),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "softsym": __version__,
        "defaults": defaults.as_dict(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "loadavg_at_start": loadavg(),
    }
    if "scipy" in sys.modules:
        info["scipy"] = sys.modules["scipy"].__version__
    if repo is not None:
        info["git_commit"] = _git_commit(repo)
    info.update(extra)
    return info
