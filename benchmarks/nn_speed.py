"""softsym.nn speed benchmark: training-step time of EMLP / SoftEMLP / RPP vs a same-width MLP, build times.

    python benchmarks/nn_speed.py                     # table + JSON in benchmarks/results/nn_speed-<time>.json
    python benchmarks/nn_speed.py --threads 2 --rounds 8
    python benchmarks/nn_speed.py --emlp /work/emlp-venv/bin/python   # also count parameters with EMLP itself

A training step is zero_grad + forward + MSE (+ ``model.regularization()``) + backward + Adam step on a batch of
500 Inertia samples (float32). Models are timed round-robin (A B C A B C ...) so that a drifting machine load hits
all of them alike; the table reports the median wall-clock and CPU (thread) time per step and the ratio to the
same-width MLP. Build times are measured in fresh processes: "cold" with an empty SOFTSYM_CACHE, "warm" with the
cache that the cold run filled (import time excluded, reported separately).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import softsym  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(ROOT / "src"))

CANDIDATES = ["O(3)", "O(2)@x", "O(2)@y", "O(2)@z"]

_BUILD_SNIPPET = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, softsym
from softsym.nn import EMLP
t1 = time.perf_counter()
m = EMLP("4V", "V0", "O(1,3)", ch=384, num_layers=3)
t2 = time.perf_counter()
print("@@NN-BUILD@@" + json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "n_parameters": m.n_parameters}))
"""

_EMLP_COUNT_SNIPPET = r"""
import json, sys
import numpy as np
np.random.seed(0)
from emlp.reps import V, Scalar
from emlp.groups import O, Lorentz
import emlp.nn.objax as enn
spec = sys.argv[1]
G = {"O(3)": O(3), "O(5)": O(5), "O(1,3)": Lorentz()}[spec]
rin, rout = {"O(3)": (5*Scalar + 5*V, V**2), "O(5)": (2*V, Scalar), "O(1,3)": (4*V, Scalar)}[spec]
model = enn.EMLP(rin, rout, G, ch=384, num_layers=3)
bil = [int(v.value.size) for k, v in model.vars().items() if "bilinear" in k]
print("@@EMLP@@" + json.dumps({"stored": int(sum(v.value.size for v in model.vars().values())), "bilinear": bil,
                              "hidden": str(enn.uniform_rep(384, G))}))
"""

TASKS = {"O(3)": ("5V0+5V", "V**2"), "O(5)": ("2V", "V0"), "O(1,3)": ("4V", "V0")}


def machine_info(threads: int) -> dict:
    from softsym.bench.machine import machine_info as shared

    return shared(Path(__file__).resolve().parents[1], torch_threads_per_run=threads)


def _run_snippet(code: str, env: dict, marker: str, args=(), python=sys.executable, timeout=1800.0):
    out = subprocess.run([python, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout)
    for line in out.stdout.splitlines():
        if line.startswith(marker):
            return json.loads(line[len(marker):])
    raise RuntimeError(f"subprocess failed ({out.returncode}):\n{out.stderr[-2000:]}")


def build_times(runs: int, blas_threads) -> dict:
    """EMLP(ParticleInteraction: O(1,3), 4V -> V0, ch 384, 3 layers) build time, cold and warm cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    if blas_threads:
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = str(blas_threads)
    cold, warm, imports = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="softsym-nn-bench-") as cache:
            env["SOFTSYM_CACHE"] = cache
            c = _run_snippet(_BUILD_SNIPPET, env, "@@NN-BUILD@@")
            w = _run_snippet(_BUILD_SNIPPET, env, "@@NN-BUILD@@")
        cold.append(c["build_s"])
        warm.append(w["build_s"])
        imports += [c["import_s"], w["import_s"]]
    return {"model": "EMLP(4V -> V0, O(1,3), ch=384, num_layers=3)", "blas_threads": blas_threads,
            "cold_s": cold, "warm_s": warm, "import_s": imports, "cold_min_s": min(cold), "warm_min_s": min(warm),
            "n_parameters": c["n_parameters"]}


def step_times(threads: int, rounds: int, steps: int, batch: int) -> dict:
    import torch

    from softsym.data.synthetic import make_task
    from softsym.nn import EMLP, MLP, RPP, SoftEMLP

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    task = make_task("inertia", n_train=batch, n_val=8, n_test=8, seed=0)
    x, y = task.x_train.float(), task.y_train.float()
    rin, rout, g = task.rep_in, task.rep_out, task.group
    t0 = time.perf_counter()
    models = {
        "MLP ch=384": MLP(rin, rout, g, ch=384),
        "EMLP ch=384": EMLP(rin, rout, g, ch=384),
        "RPP ch=384": RPP(rin, rout, g, ch=384),
        "MLP ch=128": MLP(rin, rout, g, ch=128),
        "SoftEMLP ch=128": SoftEMLP(rin, rout, CANDIDATES, ch=128),
        "SoftEMLP ch=128 (bilinear=False)": SoftEMLP(rin, rout, CANDIDATES, ch=128, bilinear=False),
    }
    build_s = time.perf_counter() - t0
    models["SoftEMLP ch=128 (no penalty in loss)"] = models["SoftEMLP ch=128"]  # isolates the penalty's cost
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, m in models.items()}

    def step(name):
        m, opt = models[name], opts[name]
        opt.zero_grad(set_to_none=True)
        loss = ((m(x) - y) ** 2).mean()
        if "no penalty" not in name:
            loss = loss + m.regularization()
        loss.backward()
        opt.step()

    for name in models:  # warm-up
        for _ in range(3):
            step(name)
    wall = {k: [] for k in models}
    cpu = {k: [] for k in models}
    for _ in range(rounds):
        for name in models:
            w0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(steps):
                step(name)
            wall[name].append((time.perf_counter() - w0) / steps)
            cpu[name].append((time.thread_time() - c0) / steps)
    rows = {}
    for name, m in models.items():
        rows[name] = {"wall_ms_median": 1e3 * statistics.median(wall[name]), "wall_ms_min": 1e3 * min(wall[name]),
                      "cpu_ms_median": 1e3 * statistics.median(cpu[name]), "cpu_ms_min": 1e3 * min(cpu[name]),
                      "n_parameters": m.n_parameters}
    for name, ref in (("EMLP ch=384", "MLP ch=384"), ("RPP ch=384", "MLP ch=384"), ("SoftEMLP ch=128", "MLP ch=128"),
                      ("SoftEMLP ch=128 (bilinear=False)", "MLP ch=128"),
                      ("SoftEMLP ch=128 (no penalty in loss)", "MLP ch=128")):
        for key in ("wall_ms_median", "cpu_ms_median", "cpu_ms_min"):
            rows[name][f"ratio_{key}"] = rows[name][key] / rows[ref][key]
    targets = {"EMLP ch=384": 5.0, "SoftEMLP ch=128": 1.5}
    return {"batch": batch, "threads": threads, "rounds": rounds, "steps_per_round": steps, "task": "inertia",
            "candidates": CANDIDATES, "models_build_s": build_s, "rows": rows, "targets": targets,
            "macs_per_sample": macs_per_sample(models["SoftEMLP ch=128"], models["MLP ch=128"])}


def macs_per_sample(soft, mlp) -> dict:
    """Multiply-adds per sample of the forward pass's matmul-like work: every linear layer, plus each bilinear
    layer at its cheapest contraction order (as BiLinear plans it). A lower bound on the step-time ratio for
    kernels of equal efficiency: the gates, the penalty and the optimizer come on top."""
    import torch

    from softsym.nn.bilinear import bilinear_structure

    lin = sum(layer.weight.numel() for layer in soft.linear_layers())
    bil = 0
    for block in list(soft.network)[:-1]:
        b = block.bilinear
        if b is None:
            continue
        for p in bilinear_structure(b.rep_in, b.rep_out, b.seed)["pairs"]:
            n, ca, cb, sa, sb = p["n"], p["cA"], p["cB"], p["sA"], p["sB"]
            bil += min(n * cb * sa * sb + ca * n * cb * sa, ca * n * cb * sb + ca * n * sa * sb)
    ref = sum(m.weight.numel() for m in mlp.modules() if isinstance(m, torch.nn.Linear))
    return {"softemlp_linear": lin, "softemlp_bilinear": bil, "mlp": ref, "ratio": (lin + bil) / ref}


def parameter_counts(emlp_python, emlp_groups) -> dict:
    from softsym.nn import EMLP

    out = {}
    for g, (rin, rout) in TASKS.items():
        m = EMLP(rin, rout, g, ch=384, num_layers=3)
        s = m.parameter_summary()
        row = {"softsym_trainable": m.n_parameters, "emlp_stored_derived": s["emlp_reference_stored"],
               "bilinear_per_layer": [r["equivariant"] for r in s["layers"] if r["layer"] == "bilinear"],
               "hidden": s["hidden_rep"]}
        if emlp_python and g in emlp_groups:
            try:
                e = _run_snippet(_EMLP_COUNT_SNIPPET, dict(os.environ), "@@EMLP@@", args=(g,), python=emlp_python)
                row.update({"emlp_stored_measured": e["stored"], "emlp_bilinear_per_layer": e["bilinear"],
                            "emlp_hidden": e["hidden"]})
            except Exception as exc:  # EMLP missing or too slow: keep the derived figures
                row["emlp_error"] = str(exc)[-300:]
        out[g] = row
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the step timings (default 1)")
    p.add_argument("--rounds", type=int, default=6, help="round-robin rounds (default 6)")
    p.add_argument("--steps", type=int, default=5, help="steps per model per round (default 5)")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--build-runs", type=int, default=2, help="cold/warm build pairs in fresh processes (default 2)")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="OMP/OpenBLAS/MKL threads of the build subprocesses (default: library defaults)")
    p.add_argument("--emlp", metavar="PYTHON", default=None, help="python of a venv with EMLP, to count its parameters")
    p.add_argument("--emlp-groups", default="O(3),O(5)",
                   help="groups whose EMLP model is built with --emlp (default 'O(3),O(5)'; EMLP's own O(1,3) "
                        "ch=384 build takes tens of minutes)")
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)

    result = {"machine": machine_info(a.threads), "started": _dt.datetime.now().isoformat(timespec="seconds")}
    if not a.skip_build:
        result["build"] = build_times(a.build_runs, a.blas_threads)
        if a.blas_threads is None:
            result["build_blas1"] = build_times(a.build_runs, 1)
    result["steps"] = step_times(a.threads, a.rounds, a.steps, a.batch)
    result["parameters"] = parameter_counts(a.emlp, [g.strip() for g in a.emlp_groups.split(",")])
    try:
        result["machine"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass

    print(f"machine: {result['machine']['cpu_model']} x{result['machine']['cpu_count']}, torch threads {a.threads}, "
          f"load avg {result['machine']['loadavg_at_start']} -> {result['machine'].get('loadavg_end')}")
    st = result["steps"]
    print(f"\ntraining step, batch {st['batch']}, Inertia (float32), Adam; median of {st['rounds']} rounds x "
          f"{st['steps_per_round']} steps")
    print(f"{'model':36s} {'params':>9s} {'wall ms':>9s} {'cpu ms':>9s} {'ratio wall':>11s} {'ratio cpu':>10s} {'target':>7s}")
    for name, r in st["rows"].items():
        rw = r.get("ratio_wall_ms_median")
        rc = r.get("ratio_cpu_ms_median")
        tgt = st["targets"].get(name)
        print(f"{name:36s} {r['n_parameters']:9d} {r['wall_ms_median']:9.2f} {r['cpu_ms_median']:9.2f} "
              f"{'' if rw is None else f'{rw:.2f}x':>11s} {'' if rc is None else f'{rc:.2f}x':>10s} "
              f"{'' if tgt is None else f'<={tgt:g}x':>7s}")
    mac = st["macs_per_sample"]
    print(f"matmul work per sample (forward): SoftEMLP ch=128 {mac['softemlp_linear']:,} (linear) + "
          f"{mac['softemlp_bilinear']:,} (bilinear) vs MLP ch=128 {mac['mlp']:,} multiply-adds = {mac['ratio']:.2f}x, "
          "a floor for the step-time ratio at equal kernel efficiency")
    for key in ("build", "build_blas1"):
        if key in result:
            b = result[key]
            print(f"\nbuild {b['model']} (BLAS threads: {b['blas_threads'] or 'default'}): "
                  f"cold {', '.join(f'{t:.2f}' for t in b['cold_s'])} s (target < 2), "
                  f"warm {', '.join(f'{t:.3f}' for t in b['warm_s'])} s (target < 0.3); "
                  f"import {min(b['import_s']):.2f} s (excluded)")
    print("\nparameters at ch=384, 3 layers: softsym trainable vs EMLP (stores dense W, b and projects them)")
    for g, r in result["parameters"].items():
        meas = r.get("emlp_stored_measured")
        print(f"  {g:7s} softsym {r['softsym_trainable']:7d} | EMLP stored (derived) {r['emlp_stored_derived']:7d}"
              + (f" | EMLP stored (measured) {meas:7d}" if meas is not None else "")
              + f" | bilinear/layer {r['bilinear_per_layer'][0]}"
              + (f" (EMLP {r['emlp_bilinear_per_layer'][0]})" if r.get("emlp_bilinear_per_layer") else "")
              + f" | hidden {r['hidden']}")
    out = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / (
        f"nn_speed-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
