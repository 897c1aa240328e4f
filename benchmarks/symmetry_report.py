"""Symmetry-report benchmark: does the held-out symmetry test find the surviving groups, and is it calibrated?

    python benchmarks/symmetry_report.py            # ~1 min on 2 cores; table + JSON in benchmarks/results/

1. Power: for every MixedInertia variant (seed 0, 1000/1000/1000 split), an MLP probe (the task's default MLP,
   300 epochs, Adam 1e-3 cosine, batch 500) and the report over PER's four candidates plus their skeletons, with
   the verdict checked against the groups that survive by construction.
2. Calibration: on 12 o3 datasets (every candidate is a symmetry), MLP probes (ch 64, 40 epochs, 300 training
   samples, 500 test samples, 8 group elements per sample): mean and sd of the z-scores (N(0, 1) or narrower if
   calibrated) and the fraction of false "broken" / "uncertain" verdicts.
3. Exact-model comparison where the distribution test cannot work: ParticleInteraction (N(0, I/16) four-momenta
   are not boost invariant), O(1,3), SO+(1,3) and the spatial O(3), MLP probe vs each candidate's exact EMLP (ch 128,
   2 layers, 100 epochs, 1000 training samples).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    import softsym  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(ROOT / "src"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from softsym import Trainer, TrainConfig, build_model, make_task  # noqa: E402
from softsym.bench.machine import machine_info  # noqa: E402
from softsym.groups.skeleton import skeleton_candidates  # noqa: E402
from softsym.report import add_exact_comparison, exact_model_comparison, symmetry_report  # noqa: E402

CANDIDATES = ["O(3)", "O(2)@x", "O(2)@y", "O(2)@z"]
SURVIVING = {"o3": set(CANDIDATES), "o2x": {"O(2)@x"}, "o2y": {"O(2)@y"}, "o2z": {"O(2)@z"}, "none": set()}


def power(epochs: int) -> list:
    rows = []
    tested = CANDIDATES + [s for s, _ in skeleton_candidates(CANDIDATES)]
    for variant, surviving in SURVIVING.items():
        task = make_task(f"mixed-inertia:{variant}", n_train=1000, seed=0)
        model = build_model("mlp", task, seed=0)
        t0 = time.perf_counter()
        Trainer(model, task, TrainConfig(epochs=epochs, lr=1e-3, batch_size=500, schedule="cosine", seed=0,
                                         progress=False)).fit()
        rep = symmetry_report(model, task, tested, seed=0)
        for r in rep["candidates"]:
            expected = "holds" if (r["group"] in surviving or r["group"].startswith("Skeleton")) else "broken"
            rows.append({"variant": variant, **r, "expected": expected, "correct": r["verdict"] == expected,
                         "seconds": time.perf_counter() - t0})
    return rows


def calibration(n_sets: int) -> dict:
    zs = []
    for seed in range(n_sets):
        task = make_task("mixed-inertia:o3", n_train=300, n_val=100, n_test=500, seed=100 + seed)
        model = build_model("mlp", task, ch=64, seed=seed)
        Trainer(model, task, TrainConfig(epochs=40, lr=1e-3, batch_size=100, seed=seed, progress=False)).fit()
        rep = symmetry_report(model, task, ["O(3)", "O(2)@z"], seed=seed, group_samples=8)
        zs.append([(r["z"], r["verdict"]) for r in rep["candidates"]])
    out = {}
    for j, g in enumerate(["O(3)", "O(2)@z"]):
        z = np.array([row[j][0] for row in zs])
        verdicts = [row[j][1] for row in zs]
        out[g] = {"z": z.tolist(), "mean": float(z.mean()), "sd": float(z.std()),
                  "false_broken": verdicts.count("broken") / len(verdicts),
                  "not_holds": sum(v != "holds" for v in verdicts) / len(verdicts)}
    return out


def lorentz(epochs: int = 100) -> list:
    task = make_task("particle-interaction", n_train=1000, n_val=200, n_test=1000, seed=0)
    cands = ["O(1,3)", "SO+(1,3)", "O(3)@[1,2,3]:4"]
    cfg = dict(epochs=epochs, lr=3e-3, batch_size=500, seed=0, progress=False)
    probe = build_model("mlp", task, ch=128, num_layers=2, seed=0)
    Trainer(probe, task, TrainConfig(**cfg)).fit()
    exact = {}
    for c in cands:
        exact[c] = build_model(f"emlp:{c}", task, ch=128, num_layers=2, seed=0)
        Trainer(exact[c], task, TrainConfig(**cfg)).fit()
    rep = add_exact_comparison(symmetry_report(probe, task, cands, group_samples=16, seed=0),
                               exact_model_comparison(probe, exact, task))
    return rep["candidates"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=300, help="probe epochs of the power study (default 300)")
    ap.add_argument("--sets", type=int, default=12, help="datasets of the calibration study (default 12)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console()
    info = machine_info(ROOT)
    rows = power(args.epochs)
    table = Table(title=f"1. power: MLP probe ({args.epochs} epochs), MixedInertia seed 0, 1000 test samples")
    for col in ("variant", "candidate", "verdict", "expected", "loss increase", "z"):
        table.add_column(col, justify="right" if col in ("loss increase", "z") else "left")
    for r in rows:
        style = "" if r["correct"] else "[red]"
        table.add_row(r["variant"], r["group"], style + r["verdict"], r["expected"],
                      f"{100 * r['loss_increase']:+.1f}%", f"{r['z']:.2f}")
    console.print(table)
    n_ok = sum(r["correct"] for r in rows)
    console.print(f"verdicts as constructed: {n_ok} / {len(rows)}")
    cal = calibration(args.sets)
    table = Table(title=f"2. calibration: {args.sets} o3 datasets (every candidate holds), MLP probes")
    for col in ("candidate", "mean z", "sd z", "false 'broken'", "not 'holds'"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for g, c in cal.items():
        table.add_row(g, f"{c['mean']:.2f}", f"{c['sd']:.2f}", f"{100 * c['false_broken']:.0f}%",
                      f"{100 * c['not_holds']:.0f}%")
    console.print(table)
    lor = lorentz()
    table = Table(title="3. ParticleInteraction: distribution test vs exact-model comparison (MLP probe, 100 epochs)")
    for col in ("candidate", "distribution", "loss increase", "exact model", "MSE ratio", "overall"):
        table.add_column(col, justify="right" if col in ("loss increase", "MSE ratio") else "left")
    for r in lor:
        table.add_row(r["group"], r["verdict"], f"{100 * r['loss_increase']:+.1f}%", r["exact"]["verdict"],
                      f"{r['exact']['loss_ratio']:.3g}", r["overall"])
    console.print(table)
    out = args.out or ROOT / "benchmarks" / "results" / f"symmetry_report-{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "power": rows, "calibration": cal, "lorentz": lor, "correct": n_ok,
                               "total": len(rows)}, indent=1, default=str))
    console.print(f"wrote {out}")
    return 0 if n_ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
