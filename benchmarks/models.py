"""Model benchmark: EMLP's protocol (mlp vs emlp) and PER's MixedInertia comparison (mlp, emlp, oracle emlp,
rpp, per, soft), with targets checked against published numbers.

    python benchmarks/models.py --quick            # minutes: every run with few epochs (numbers NOT comparable)
    nohup python benchmarks/models.py --full &     # the full protocols: hours; resumable (see below)
    python benchmarks/models.py --full --tasks mixed-inertia:o2z --seeds 3 --jobs 2   # a faithful subset
    python benchmarks/models.py --summary          # table of what --full has finished (+ models-full-summary.json)

Protocols
---------
EMLP (Finzi et al. 2021), N = 1000 training samples, val 1000, test 5000: 3 hidden layers, 384 channels, Adam 3e-3
at a constant rate (EMLP's train_basic: lr_sched = lr; a cosine schedule gave O5Synthetic 0.025 instead of 0.015 on
seed 0), batch 500, epochs = min(30 * 30000 / N, 1000) = 900; mlp and emlp on O5Synthetic, Inertia
and ParticleInteraction; test MSE on raw targets. Published means (EMLP / MLP): O5Synthetic 0.0170 / 0.0892,
Inertia 0.136 / 3.24, ParticleInteraction 3.30e-4 / 0.364. Target: within 1.25x of the published mean.

PER (Kim et al. 2023) MixedInertia, 1000 / 1000 / 1000: Adam 1e-3 cosine, batch 500, 8000 epochs, ch 128 (RPP 89),
L2 weight decay 2e-4 on the soft models (per, soft) as in PER's code; mlp, emlp, emlp:<surviving group> (oracle),
rpp, per, soft on the variants o3, o2x, o2y, o2z, none. Targets: soft beats mlp / emlp / rpp on o2x, o2y, o2z, none
("beats" = lower mean test MSE over >= 3 seeds by more than the std of the per-seed difference), is no worse than
per (per does not beat soft), and is within 1.1x of emlp on o3 and of the oracle emlp:<surviving group> elsewhere.

--full appends every finished run as one JSON line to benchmarks/results/models-full.jsonl and keeps per-run
checkpoints in benchmarks/results/models-full-runs/, so it can be interrupted and restarted at any time: finished
runs are skipped and an interrupted run resumes from its last checkpoint (bit-identical on CPU).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing as mp
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FULL_JSONL = RESULTS / "models-full.jsonl"
FULL_RUNS = RESULTS / "models-full-runs"

EMLP_TASKS = ("o5synthetic", "inertia", "particle-interaction")
EMLP_MODELS = ("mlp", "emlp")
PUBLISHED = {  # EMLP paper, N = 1000, test MSE on raw targets (mean)
    ("o5synthetic", "emlp"): 0.0170, ("o5synthetic", "mlp"): 0.0892,
    ("inertia", "emlp"): 0.136, ("inertia", "mlp"): 3.24,
    ("particle-interaction", "emlp"): 3.30e-4, ("particle-interaction", "mlp"): 0.364,
}
MIXED_VARIANTS = ("o3", "o2x", "o2y", "o2z", "none")
SURVIVING = {"o3": "O(3)", "o2x": "O(2)@x", "o2y": "O(2)@y", "o2z": "O(2)@z", "none": None}
QUICK_EPOCHS = {"emlp": 20, "per": 100}  # --quick: epochs per protocol
QUICK_SEEDS = 1


#: models with extra candidates beside PER's four (reported in their own column, never in the targets): on "none",
#: y = I diag(2, 0, 1) keeps exactly the axis flips Signs(3) (a diagonal weighting commutes with diagonal signs).
#: per+signs gives PER's tuner that group (soft finds it itself: its candidates include each candidate's finite
#: skeleton, and Skeleton(O(3)) = Signs(3); the soft+signs column of model version 4 was the same idea by hand).
EXTRA_CANDIDATES = {"per+signs": ["Signs(3)"]}
#: variants on which each extra-candidate model runs
EXTRA_VARIANTS = {"per+signs": ("none",)}


def mixed_models(variant: str):
    g = SURVIVING[variant]
    models = ["mlp", "emlp"]
    if g is not None and g != "O(3)":
        models.append(f"emlp:{g}")
    return models + ["rpp", "per", "soft"] + [m for m, vs in EXTRA_VARIANTS.items() if variant in vs]


def oracle(variant: str):
    g = SURVIVING[variant]
    if g is None:
        return None
    return "emlp" if g == "O(3)" else f"emlp:{g}"


def plan(quick: bool, tasks=None, models=None, seeds: int = 3):
    """List of run specs (dicts) in an order that makes partial results useful (seed-major)."""
    runs = []
    for seed in range(seeds):
        for task in EMLP_TASKS:
            for model in EMLP_MODELS:
                runs.append({"protocol": "emlp", "task": task, "model": model, "seed": seed, "n_train": 1000,
                             "n_val": 1000, "n_test": 5000, "ch": 384, "epochs": QUICK_EPOCHS["emlp"] if quick
                             else min(int(30 * 30000 / 1000), 1000), "lr": 3e-3, "batch_size": 500,
                             "weight_decay": 0.0, "schedule": "constant"})
        for v in MIXED_VARIANTS:
            for model in mixed_models(v):
                runs.append({"protocol": "per", "task": f"mixed-inertia:{v}", "model": model, "seed": seed,
                             "n_train": 1000, "n_val": 1000, "n_test": 1000, "ch": 89 if model == "rpp" else 128,
                             "epochs": QUICK_EPOCHS["per"] if quick else 8000, "lr": 1e-3, "batch_size": 500,
                             "weight_decay": 2e-4 if model in ("per", "soft") or model in EXTRA_CANDIDATES else 0.0,
                             "schedule": "cosine"})
    if tasks:
        runs = [r for r in runs if r["task"] in tasks]
    if models:
        runs = [r for r in runs if r["model"] in models or r["model"].split(":")[0] in models
                or ("oracle" in models and r["protocol"] == "per"
                    and r["model"] == oracle(r["task"].split(":", 1)[1]))]
    return runs


#: Bumped whenever a change makes earlier results incomparable (2: MixedInertia c = -1, EMLP step sizes).
RESULTS_VERSION = 2


#: Tasks whose data changed after RESULTS_VERSION 2 (ParticleInteraction: EMLP's input scale, the RMS of each
#: four-vector, instead of a Minkowski-norm mean).
DATA_VERSION = {"particle-interaction": 3}
#: Models whose method changed after RESULTS_VERSION 2 (soft 2: strengths decided early, warm-up 5% + window 20%).
#: emlp / rpp 2 (and emlp:<group>): EquivariantLinear back to orthonormal coefficients (coef_scale="none").
#: soft 3: the proximal step also shrinks the gradient before Adam.
#: soft 4: two-stage fit (SoftTuner restart=True): the model restarts from its initialisation with the decided
#: strengths.
#: soft 5: the candidates include each candidate's finite skeleton (Skeleton(O(3)) = Signs(3), ...).
MODEL_VERSION = {"soft": 5, "per+signs": 1, "emlp": 2, "rpp": 2}


def run_key(spec) -> str:
    key = "v{v}|{protocol}|{task}|{model}|seed{seed}|N{n_train}|ch{ch}|ep{epochs}".format(
        v=DATA_VERSION.get(spec["task"], RESULTS_VERSION), **spec)
    kind = spec["model"].split(":", 1)[0]
    if kind in MODEL_VERSION:
        key += f"|{kind}{MODEL_VERSION[kind]}"
    return key if spec.get("schedule", "cosine") == "cosine" else f"{key}|{spec['schedule']}"


def current_results(done: dict, max_seeds: int = 20) -> list:
    """The finished runs of ``done`` (key -> result) that belong to today's full plan (older protocol versions,
    e.g. a changed schedule, are kept in the file but not summarised)."""
    keys = {run_key(s) for s in plan(False, seeds=max_seeds)}
    return [r for k, r in done.items() if k in keys]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def run_one(spec, run_root=None, threads: int = 1):
    """Train one spec and return its metrics (history kept for soft models)."""
    import torch

    torch.set_num_threads(threads)
    from softsym.data import make_task
    from softsym.models import build_model
    from softsym.train import TrainConfig, Trainer

    task = make_task(spec["task"], n_train=spec["n_train"], n_val=spec["n_val"], n_test=spec["n_test"],
                     seed=spec["seed"])
    extra = EXTRA_CANDIDATES.get(spec["model"])
    if extra:
        model = build_model(spec["model"].split("+", 1)[0], task, ch=spec["ch"], num_layers=3, seed=spec["seed"],
                            candidates=list(task.candidates) + extra)
    else:
        model = build_model(spec["model"], task, ch=spec["ch"], num_layers=3, seed=spec["seed"])
    run_dir = None if run_root is None else str(Path(run_root) / _slug(run_key(spec)))
    cfg = TrainConfig(lr=spec["lr"], epochs=spec["epochs"], batch_size=spec["batch_size"],
                      weight_decay=spec["weight_decay"], schedule=spec.get("schedule", "cosine"), seed=spec["seed"],
                      run_dir=run_dir, resume=run_dir is not None,
                      progress=False, equivariance_samples=16, equivariance_points=256)
    t0 = time.perf_counter()
    metrics = Trainer(model, task, cfg).fit().metrics
    metrics["wall_seconds"] = time.perf_counter() - t0
    metrics["spec"] = spec
    metrics["model"] = spec["model"]  # e.g. "per+signs" (the network itself is a "per" model)
    metrics["key"] = run_key(spec)
    return metrics


def _worker(args):
    spec, run_root, threads = args
    try:
        return run_one(spec, run_root, threads)
    except Exception as exc:  # report and keep the other runs going
        return {"key": run_key(spec), "spec": spec, "error": f"{type(exc).__name__}: {exc}"}


def machine_info(threads: int, jobs: int):
    from softsym.bench.machine import machine_info as shared

    return shared(ROOT, torch_threads_per_run=threads, parallel_runs=jobs)


# ------------------------------------------------------------------ summary and targets
def summarize_results(results):
    from softsym.report import beats, paired_difference, summarize

    ok = [r for r in results if "error" not in r and r.get("finished")]
    out = {"emlp": {}, "mixed": {}, "targets": []}
    for task in EMLP_TASKS:
        rs = [r for r in ok if r["task"] == task]
        if not rs:
            continue
        s = summarize(rs)
        for model, row in s.items():
            pub = PUBLISHED.get((task, model))
            ratio = row["test_mse_mean"] / pub if pub else None
            row.update({"published": pub, "ratio_to_published": ratio})
            out["emlp"].setdefault(task, {})[model] = row
            if pub:
                out["targets"].append({"target": f"{task} {model} within 1.25x of published {pub:g}",
                                       "value": ratio, "pass": ratio is not None and ratio <= 1.25,
                                       "n_seeds": row["n_seeds"]})
    for v in MIXED_VARIANTS:
        task = f"mixed-inertia:{v}"
        rs = [r for r in ok if r["task"] == task]
        if not rs:
            continue
        s = summarize(rs)
        out["mixed"][v] = s
        if "soft" not in s:
            continue
        n = s["soft"]["n_seeds"]
        if v != "o3":
            for other in ("mlp", "emlp", "rpp"):
                if other in s:
                    d = paired_difference(rs, "soft", other)
                    out["targets"].append({"target": f"{v}: soft beats {other}", "pass": beats(rs, "soft", other),
                                           "value": d["mean"], "std": d["std"], "n_seeds": d["n"]})
        if "per" in s:
            d = paired_difference(rs, "per", "soft")
            per_beats = beats(rs, "per", "soft")
            out["targets"].append({"target": f"{v}: soft no worse than per (per does not beat soft)",
                                   "pass": None if per_beats is None else not per_beats,
                                   "value": -d["mean"], "std": d["std"], "n_seeds": d["n"]})
        order = _strength_order_check(v, [r for r in rs if r.get("model") == "soft"])
        if order is not None:
            out["targets"].append(order)
        ref = oracle(v)
        if ref and ref in s:
            ratio = s["soft"]["test_mse_mean"] / s[ref]["test_mse_mean"]
            out["targets"].append({"target": f"{v}: soft within 1.1x of {ref}", "value": ratio,
                                   "pass": ratio <= 1.1, "n_seeds": min(n, s[ref]["n_seeds"])})
    return out


PER_CANDIDATES = ("O(3)", "O(2)@x", "O(2)@y", "O(2)@z")


def _strength_order_check(variant: str, runs):
    """Target "learned strengths put the surviving group first, all candidates high on o3", on every seed:
    o3: each of PER's four >= 1/2 of the largest strength; o2a: O(2)@a >= 1e3 x each other of PER's four;
    none (no O(2) survives): each of PER's four <= 1e-3 x the largest strength (a skeleton's)."""
    rows = [r.get("strengths") or {} for r in runs]
    if not rows or not all(set(PER_CANDIDATES) <= set(st) for st in rows):
        return None
    surviving = SURVIVING[variant]
    ok = []
    for st in rows:
        top = max(st.values())
        if variant == "o3":
            ok.append(all(st[c] >= 0.5 * top for c in PER_CANDIDATES))
        elif surviving is None:
            ok.append(all(st[c] <= 1e-3 * top for c in PER_CANDIDATES))
        else:
            ok.append(all(st[surviving] >= 1e3 * st[c] for c in PER_CANDIDATES if c != surviving))
    what = {"o3": "all of PER's four candidates high", None: "every O(2) and O(3) low (<= 1e-3 x the strongest)"}
    label = what.get(variant if variant == "o3" else surviving, f"{surviving} first among PER's four (>= 1e3 x)")
    return {"target": f"{variant}: soft strengths: {label}, every seed", "value": float(sum(ok)),
            "pass": all(ok) if len(ok) >= 3 else None, "n_seeds": len(ok)}


def print_summary(summary, header: str = ""):
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    if header:
        console.print(header)
    if summary["emlp"]:
        t = Table(title="EMLP protocol, N=1000 (test MSE on raw targets, mean ± std over seeds)")
        for c in ("task", "model", "seeds", "test MSE", "published", "ratio", "params", "step", "equiv. err"):
            t.add_column(c)
        for task, rows in summary["emlp"].items():
            for model, r in rows.items():
                eq = ", ".join(f"{k} {v:.1e}" for k, v in r["equivariance"].items())
                t.add_row(task, model, str(r["n_seeds"]), f"{r['test_mse_mean']:.4g} ± {r['test_mse_std']:.2g}",
                          f"{r['published']:g}" if r["published"] else "-",
                          f"{r['ratio_to_published']:.2f}x" if r["ratio_to_published"] else "-",
                          f"{r['n_parameters']:,}", f"{r['step_seconds'] * 1e3:.0f} ms", eq)
        console.print(t)
    if summary["mixed"]:
        models = []
        for rows in summary["mixed"].values():
            for m in rows:
                key = "emlp:<surviving>" if m.startswith("emlp:") else m
                if key not in models:
                    models.append(key)
        t = Table(title="MixedInertia, PER protocol (test MSE, mean ± std over seeds; oracle = emlp:<surviving group>)")
        t.add_column("variant")
        for m in models:
            t.add_column(m, justify="right")
        t.add_column("soft strengths (geo. mean)")
        for v, rows in summary["mixed"].items():
            cells = []
            for m in models:
                r = next((rows[k] for k in rows if (k.startswith("emlp:") and m == "emlp:<surviving>") or k == m),
                         None)
                cells.append("-" if r is None else f"{r['test_mse_mean']:.3g} ± {r['test_mse_std']:.1g} (n={r['n_seeds']})")
            st = rows.get("soft", {}).get("strengths") or {}
            t.add_row(v, *cells, ", ".join(f"{k} {x:.2g}" for k, x in st.items()))
        console.print(t)
        t2 = Table(title="MixedInertia timings (mean per run)")
        for c in ("variant", "model", "params", "build", "step", "train", "tuner overhead"):
            t2.add_column(c)
        for v, rows in summary["mixed"].items():
            for m, r in rows.items():
                t2.add_row(v, m, f"{r['n_parameters']:,}", f"{r['build_seconds']:.2f} s", f"{r['step_seconds'] * 1e3:.1f} ms",
                           f"{r['train_seconds']:.0f} s", f"{100 * r['tuner_overhead_fraction']:.1f}%")
        console.print(t2)
    if summary["targets"]:
        t = Table(title="Targets")
        for c in ("target", "value", "seeds", "result"):
            t.add_column(c)
        for tg in summary["targets"]:
            val = tg.get("value")
            text = "-" if val is None else (f"{val:.3g}" + (f" ± {tg['std']:.2g}" if tg.get("std") is not None else ""))
            res = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]n/a (< 3 seeds)[/]"}[tg["pass"]]
            t.add_row(tg["target"], text, str(tg.get("n_seeds")), res)
        console.print(t)


def _load_jsonl(path: Path):
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption
            if "error" not in r:
                out[r["key"]] = r
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="few epochs per run (default)")
    mode.add_argument("--full", action="store_true", help="the full protocols, resumable, appends to "
                                                          "results/models-full.jsonl")
    mode.add_argument("--summary", action="store_true", help="print the summary of results/models-full.jsonl")
    ap.add_argument("--tasks", default="", help="comma-separated task names to run (default all)")
    ap.add_argument("--models", default="", help="comma-separated models to run (default all; 'emlp' includes "
                                                 "every emlp:<group>; 'oracle' selects the exact model of the "
                                                 "surviving group of each MixedInertia variant)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default: 3 full, 1 quick)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel runs (processes)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    args = ap.parse_args(argv)
    quick = not (args.full or args.summary)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.summary:
        results = current_results(_load_jsonl(FULL_JSONL))
        header = f"{len(results)} finished runs in {FULL_JSONL}"
        summary = summarize_results(results)
        print_summary(summary, header)
        out = RESULTS / "models-full-summary.json"
        slim = [{k: v for k, v in r.items() if k != "history"} for r in results]
        new = json.loads(json.dumps({"mode": "full-summary", "header": header, "summary": summary, "runs": slim},
                                    default=str))
        try:
            old = json.loads(out.read_text())
        except (OSError, ValueError):
            old = None
        if old is not None and {k: v for k, v in old.items() if k != "machine"} == new:
            # the same runs: keep the file, and with it the machine that measured them
            print(f"{out} is up to date (machine: {old.get('machine', {}).get('cpu_model', 'unknown')})")
            return 0
        new["machine"] = machine_info(args.threads, args.jobs)
        out.write_text(json.dumps(new, indent=1, default=str))
        print(f"wrote {out}")
        return 0
    seeds = args.seeds if args.seeds is not None else (QUICK_SEEDS if quick else 3)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    specs = plan(quick, tasks, models, seeds)
    if not specs:
        print("nothing to run (check --tasks / --models)", file=sys.stderr)
        return 2
    header = (f"QUICK MODE: every run uses {QUICK_EPOCHS['emlp']} epochs (EMLP protocol: 900) or "
              f"{QUICK_EPOCHS['per']} epochs (PER protocol: 8000), {seeds} seed(s); the numbers below are NOT "
              "comparable to the published ones and the targets are not meaningful." if quick else
              f"FULL protocol: {len(specs)} runs, {seeds} seed(s)")
    print(header, flush=True)
    done = _load_jsonl(FULL_JSONL) if not quick else {}
    todo = [s for s in specs if run_key(s) not in done]
    if not quick:
        print(f"{len(specs) - len(todo)} runs already finished in {FULL_JSONL}; {len(todo)} to go", flush=True)
    results = [done[run_key(s)] for s in specs if run_key(s) in done]
    run_root = None if quick else FULL_RUNS
    t0 = time.perf_counter()
    work = [(s, run_root, args.threads) for s in todo]
    pool = mp.get_context("spawn").Pool(args.jobs) if args.jobs > 1 else None
    iterator = pool.imap_unordered(_worker, work) if pool else map(_worker, work)
    try:
        for i, r in enumerate(iterator, 1):
            if "error" in r:
                print(f"[{i}/{len(todo)}] {r['key']}: ERROR {r['error']}", flush=True)
                continue
            results.append(r)
            print(f"[{i}/{len(todo)}] {r['key']}: test MSE {r['test_mse']:.4g} ({r['wall_seconds']:.0f} s)"
                  + (f" strengths {', '.join(f'{k} {v:.3g}' for k, v in r['strengths'].items())}"
                     if r.get("strengths") else ""), flush=True)
            if not quick:
                with open(FULL_JSONL, "a") as fh:
                    fh.write(json.dumps(r) + "\n")
    finally:
        if pool:
            pool.terminate()
    summary = summarize_results(results)
    print_summary(summary, header)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"models-{'quick' if quick else 'full'}-{stamp}.json"
    slim = [{k: v for k, v in r.items() if k != "history"} for r in results]
    out.write_text(json.dumps({"mode": "quick" if quick else "full", "header": header,
                               "machine": machine_info(args.threads, args.jobs),
                               "quick_epochs": QUICK_EPOCHS if quick else None,
                               "seconds": time.perf_counter() - t0, "summary": summary, "runs": slim}, indent=1,
                              default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
