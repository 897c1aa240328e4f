"""Shared test setup: every test session gets its own, empty basis cache.

``SOFTSYM_CACHE`` is set at import time (before any test imports softsym's cache helpers) so no test can ever read
or write the user's real cache; the directory is removed when the session ends.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_SESSION_CACHE = tempfile.mkdtemp(prefix="softsym-test-cache-")
os.environ["SOFTSYM_CACHE"] = _SESSION_CACHE


@pytest.fixture(scope="session", autouse=True)
def _session_cache_dir():
    """Point SOFTSYM_CACHE at the per-session temporary directory for the whole run and clean it up after."""
    os.environ["SOFTSYM_CACHE"] = _SESSION_CACHE
    yield _SESSION_CACHE
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache directory for one test, with the in-memory cache and the warn-once registry cleared."""
    from softsym.reps import cache

    path = tmp_path / "softsym-cache"
    monkeypatch.setenv("SOFTSYM_CACHE", str(path))
    monkeypatch.setattr(cache, "_warned", set())
    monkeypatch.setattr(cache, "_unwritable", set())
    cache._memory.clear()
    yield path
    cache._memory.clear()


@pytest.fixture
def one_thread():
    """Tiny models: one intra-op thread is faster and steadier on a shared machine (restored afterwards).

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
