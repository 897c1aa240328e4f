"""Session 11: fixes from the sixth round of user passes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_fit_json_reports_an_interrupted_run(tmp_path: Path):
    from softsym.cli.train import _interrupted_summary

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"epoch": e, "val_mse": 1.0}) for e in (1, 2, 3)) + "\n")
    (run / "last.pt").write_bytes(b"x")
    out = _interrupted_summary(run, KeyboardInterrupt("interrupted after epoch 3"))
    assert out["finished"] is False and out["interrupted"] is True
    assert out["epoch"] == 3 and out["run_dir"] == str(run) and "--resume" in out["resume"]
    none = _interrupted_summary(None, KeyboardInterrupt())
    assert none["epoch"] is None and none["resume"] is None and none["message"] == "interrupted"
