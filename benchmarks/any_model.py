"""Benchmark: symmetry for any model.

1. Wrappers (float64, generic random inputs): equivariance error of frame-averaged (O(3), SO(3), E(3), SE(3)),
   canonicalised and group-averaged (S(5), D(6)) ordinary MLPs, and their forward time against the base model's
   (target: error < 1e-10, wrapped time <= |frame| x base time).
2. Inertia (N=1000): plain MLP vs MLP + sampled O(3) penalty vs frame-averaged MLP, trained in the same run
   (target: penalised test MSE <= 1/2 plain, equivariance error >= 10x lower).
3. Lie-derivative error (float64) of exactly equivariant models: softsym.nn.EMLP when importable, a model built
   from softsym.equivariant_basis, and the frame-averaged MLP (forward-mode AD through eigh) (target < 1e-8).

    python benchmarks/any_model.py            # full: 600 epochs per Inertia model (~3-5 min on 2 CPU cores)
    python benchmarks/any_model.py --quick    # 150 epochs: the Inertia targets are not expected to be met

Prints rich tables and writes JSON (with machine info) to benchmarks/results/any_model-<timestamp>.json.
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
from rich.console import Console
from rich.table import Table
from torch import nn

import softsym
from softsym.data.synthetic import make_task
from softsym.metrics import equivariance_error, lie_derivative_error, scale_adjusted_rel_err
from softsym.soft import SoftSymmetry
from softsym.soft.sampled import SampledPenalty
from softsym.wrappers import Canonicalize, FrameAverage, GroupAverage, SortCanonicalize

console = Console(width=None if sys.stdout.isatty() else 150)
RESULTS = Path(__file__).resolve().parent / "results"


def _load_example():
    """examples/any_model.py, whose training recipe (ramped penalty) and cloud adapter this benchmark measures."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "any_model.py"
    spec = importlib.util.spec_from_file_location("softsym_example_any_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_EXAMPLE = _load_example()
CloudToFlat = _EXAMPLE.CloudToFlat  # clouds (B, 5, 4) = [x, y, z, mass] -> the MLP's flat layout (B, 20)
train = _EXAMPLE.train  # Adam + one-cycle lr, penalty strength ramped linearly from 0 over ``ramp`` of training

GROUP, REP_IN, REP_OUT = "O(3)", "5V0+5V", "V**2"


# ====================================================================== helpers
def machine_info() -> dict:
    from softsym.bench.machine import machine_info as shared

    return shared(Path(__file__).resolve().parents[1])


def mlp(n_in: int, n_out: int, hidden: int = 256, seed: int = 0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, n_out)).to(dtype)


def to_cloud(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x[:, 5:].reshape(-1, 5, 3), x[:, :5, None]], dim=-1)


class FlatFrame(nn.Module):
    """Flat Inertia inputs (B, 20) -> frame wrapper on the cloud -> flat (B, 9)."""

    def __init__(self, wrapper: nn.Module):
        super().__init__()
        self.wrapper = wrapper

    def forward(self, x):
        return self.wrapper(to_cloud(x)).reshape(x.shape[0], -1)


def _clock():
    """CPU time of this thread when torch runs on one thread (robust to other processes on the machine; every
    op then runs on the calling thread), wall time otherwise."""
    return time.thread_time() if torch.get_num_threads() == 1 else time.perf_counter()


def paired_times(base, wrapped, x: torch.Tensor, n_base_batches: int, repeats: int):
    """Best-of-``repeats`` forward times (s) of the base model (per call, averaged over ``n_base_batches``
    distinct batches shaped like x, so that it does not run on cache-warm data while the wrapper cannot) and of the
    wrapper on x, measured alternately; thread CPU time with one torch thread (see ``_clock``)."""
    gen = torch.Generator().manual_seed(7)
    batches = [x[torch.randperm(len(x), generator=gen)] + 0.0 for _ in range(max(1, n_base_batches))]
    tb, tw = [], []
    with torch.no_grad():
        base(x)
        wrapped(x)
        for _ in range(repeats):
            t0 = _clock()
            for xb in batches:
                base(xb)
            tb.append((_clock() - t0) / len(batches))
            t0 = _clock()
            wrapped(x)
            tw.append(_clock() - t0)
    return min(tb), min(tw)


def euclidean_error(f, x: torch.Tensor, n_samples: int, special: bool, seed: int = 0) -> dict:
    """Scale-adjusted error of f (flat Inertia layout) under x -> R x + t (positions), Y -> R Y R^T (output)."""
    group = softsym.group("SO(3)" if special else "O(3)")
    rots = group.sample(n_samples, seed=seed)
    shifts = torch.from_numpy(np.random.default_rng(seed).standard_normal((n_samples, 3)))
    errs, plain = [], []
    with torch.no_grad():
        fx = f(x).reshape(-1, 3, 3)
        for r, t in zip(rots, shifts):
            xg = x.clone()
            xg[:, 5:] = (x[:, 5:].reshape(-1, 5, 3) @ r.T + t).reshape(-1, 15)
            a = f(xg).reshape(-1, 3, 3)
            b = r @ fx @ r.T
            errs.append(scale_adjusted_rel_err(a, b, r))
            plain.append(float((a - b).norm() / fx.norm()))
    return {"mean": float(np.mean(errs)), "max": float(np.max(errs)), "plain_max": float(np.max(plain))}


def fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return f"{x:.2e}"


# ====================================================================== 1. wrappers
def bench_wrappers(quick: bool) -> list:
    rows = []
    n_inputs, n_samples, repeats = 64, 32, (5 if quick else 20)
    x = torch.randn(n_inputs, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[:, :5] = torch.nn.functional.softplus(x[:, :5])  # positive masses, like the Inertia task
    x_time = torch.randn(1000, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x_time[:, :5] = torch.nn.functional.softplus(x_time[:, :5])
    base = mlp(20, 9)
    big = mlp(20, 9, hidden=1024)
    for label, cls, group, net in (("FrameAverage", FrameAverage, "O(3)", base),
                                   ("FrameAverage", FrameAverage, "SO(3)", base),
                                   ("FrameAverage", FrameAverage, "E(3)", base),
                                   ("FrameAverage", FrameAverage, "SE(3)", base),
                                   ("Canonicalize", Canonicalize, "O(3)", base),
                                   ("FrameAverage (MLP 1024)", FrameAverage, "O(3)", big)):
        cloud_model = CloudToFlat(net)  # the point-cloud model that gets wrapped

        def base_flat(v, cloud_model=cloud_model):  # the same model without the wrapper, on the same clouds
            return cloud_model(to_cloud(v))

        wrapper = cls(cloud_model, group, scalar_channels=1, output="tensor")
        f = FlatFrame(wrapper)
        if group.startswith(("E", "SE")):
            err = euclidean_error(f, x, n_samples, special=group.startswith("SE"))
            base_err = euclidean_error(base_flat, x, n_samples, special=group.startswith("SE"))
        else:
            r = equivariance_error(f, group, REP_IN, REP_OUT, x, n_samples)
            err = {"mean": r.mean, "max": r.max, "plain_max": r.plain_max}
            base_err = {"max": equivariance_error(base_flat, group, REP_IN, REP_OUT, x, n_samples).max}
        base_time, t = paired_times(base_flat, f, x_time, wrapper.frame_size, repeats)
        rows.append({"wrapper": label, "group": group, "frame": wrapper.frame_size, "error_max": err["max"],
                     "error_mean": err["mean"], "plain_max": err["plain_max"], "base_error_max": base_err["max"],
                     "base_ms": base_time * 1e3, "wrapped_ms": t * 1e3, "ratio": t / base_time,
                     "ratio_per_frame": t / (base_time * wrapper.frame_size)})
    # finite groups: exact group averaging and sorting
    for label, group, rin, rout in (("GroupAverage", "S(5)", "V", "V"), ("GroupAverage", "D(6)", "3V", "V"),
                                    ("SortCanonicalize", "S(5)", "V", "V")):
        g = softsym.group(group)
        n_in, n_out = softsym.rep(rin, g).size, softsym.rep(rout, g).size
        net = mlp(n_in, n_out)
        if label == "GroupAverage":
            wrapper = GroupAverage(net, group, rin, rout)
        else:
            wrapper = SortCanonicalize(net, "equivariant")
        frame = wrapper.n_samples if label == "GroupAverage" else 1
        xi = torch.randn(n_inputs, n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        r = equivariance_error(wrapper, group, rin, rout, xi, n_samples)
        base_r = equivariance_error(net, group, rin, rout, xi, n_samples)
        xt = torch.randn(1000, n_in, dtype=torch.float64)
        tb, tw = paired_times(net, wrapper, xt, min(frame, 16), max(3, repeats // 2))
        rows.append({"wrapper": label, "group": group, "frame": frame, "error_max": r.max, "error_mean": r.mean,
                     "plain_max": r.plain_max, "base_error_max": base_r.max, "base_ms": tb * 1e3,
                     "wrapped_ms": tw * 1e3, "ratio": tw / tb, "ratio_per_frame": tw / (tb * frame)})
    return rows


# ====================================================================== 2. Inertia
def bench_inertia(epochs: int, strength: float, n_samples: int) -> dict:
    task = make_task("inertia", 1000, seed=0)
    y_scale = float(task.y_train.pow(2).mean().sqrt())  # one scalar: preserves equivariance
    xtr, ytr = task.x_train.float(), (task.y_train / y_scale).float()
    out = {"epochs": epochs, "strength": strength, "penalty_samples": n_samples, "n_train": 1000,
           "n_test": len(task.x_test), "y_scale": y_scale, "models": {}}
    for name in ("plain MLP", "MLP + sampled penalty", "MLP + frame averaging"):
        net = mlp(20, 9, dtype=torch.float32)
        if name == "MLP + sampled penalty":
            sym = SoftSymmetry([GROUP], strengths=strength)
            pen = SampledPenalty(sym, REP_IN, REP_OUT, n_samples=n_samples, seed=0)
            model, secs = net, train(net, xtr, ytr, epochs=epochs, penalty=pen)
        elif name == "MLP + frame averaging":
            model = FlatFrame(FrameAverage(CloudToFlat(net), GROUP, scalar_channels=1, output="tensor"))
            secs = train(model, xtr, ytr, epochs=epochs)
        else:
            model, secs = net, train(net, xtr, ytr, epochs=epochs)
        model.eval()

        def predict(v, model=model):
            return model(v.float()) * y_scale

        with torch.no_grad():
            mse = float((predict(task.x_test).double() - task.y_test).pow(2).mean())
            train_mse = float((predict(task.x_train).double() - task.y_train).pow(2).mean())
        err = equivariance_error(predict, GROUP, REP_IN, REP_OUT, task.x_test[:500], 16, seed=1,
                                 dtype=torch.float32)
        out["models"][name] = {"test_mse": mse, "train_mse": train_mse, "eq_mean": err.mean, "eq_max": err.max,
                               "plain_max": err.plain_max, "train_seconds": secs}
    m = out["models"]
    out["mse_ratio"] = m["MLP + sampled penalty"]["test_mse"] / m["plain MLP"]["test_mse"]
    out["eq_reduction"] = m["plain MLP"]["eq_mean"] / max(m["MLP + sampled penalty"]["eq_mean"], 1e-300)
    out["targets_met"] = bool(out["mse_ratio"] <= 0.5 and out["eq_reduction"] >= 10)
    return out


# ====================================================================== 3. Lie derivative of exact models
class BasisModel(nn.Module):
    """Exactly equivariant without softsym.nn: y = (W x) * sigmoid(s(x)) with W = Q c from Hom(rep_in, rep_out)
    and an invariant gate s(x) = (u . x)^2 + 0.1 |x|^2, u from Hom(rep_in, V0)."""

    def __init__(self, group, rep_in, rep_out, seed=0):
        super().__init__()
        g = softsym.group(group)
        rin, rout = softsym.rep(rep_in, g), softsym.rep(rep_out, g)
        self.bw = softsym.equivariant_basis(softsym.Hom(rin, rout))
        self.bs = softsym.equivariant_basis(softsym.Hom(rin, softsym.rep("V0", g)))
        gen = torch.Generator().manual_seed(seed)
        self.cw = nn.Parameter(torch.randn(self.bw.dim, generator=gen, dtype=torch.float64))
        self.cs = nn.Parameter(torch.randn(self.bs.dim, generator=gen, dtype=torch.float64))
        self.n_in, self.n_out = rin.size, rout.size

    def forward(self, x):
        w = self.bw.expand(self.cw).reshape(self.n_out, self.n_in)
        u = self.bs.expand(self.cs).reshape(1, self.n_in)
        gate = torch.sigmoid((x @ u.T) ** 2 + 0.1 * (x * x).sum(1, keepdim=True))
        return (x @ w.T) * gate


def bench_lie(quick: bool) -> list:
    x = torch.randn(64, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x[:, :5] = torch.nn.functional.softplus(x[:, :5])
    models = []
    from softsym.nn import EMLP

    torch.manual_seed(0)
    models.append(("softsym.nn.EMLP (ch=64, 2 layers)",
                   EMLP(REP_IN, REP_OUT, GROUP, ch=64, num_layers=2, dtype=torch.float64)))
    models.append(("basis model W = Q c, invariant gate", BasisModel(GROUP, REP_IN, REP_OUT)))
    fa = FlatFrame(FrameAverage(CloudToFlat(mlp(20, 9)), GROUP, scalar_channels=1, output="tensor"))
    models.append(("frame-averaged MLP (jvp through eigh)", fa))
    models.append(("plain MLP (negative control)", mlp(20, 9)))
    rows = []
    for name, model in models:
        lie = lie_derivative_error(model, GROUP, REP_IN, REP_OUT, x)
        eq = equivariance_error(model, GROUP, REP_IN, REP_OUT, x, 16)
        rows.append({"model": name, "lie_max": lie.max, "lie_mean": lie.mean, "eq_max": eq.max,
                     "per_generator": [g["error"] for g in lie.per_generator], "method": lie.method})
    return rows


# ====================================================================== main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="150 epochs per Inertia model instead of 600")
    ap.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    ap.add_argument("--strength", type=float, default=25.0,
                    help="final sampled-penalty strength, reached by a linear ramp over training (default 25)")
    ap.add_argument("--penalty-samples", type=int, default=8, help="group elements per input and step (default 8)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: stable timings)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    epochs = args.epochs or (150 if args.quick else 600)
    mode = f"{'quick' if args.quick else 'full'} mode: {epochs} epochs per Inertia model"
    info = machine_info()
    console.print(f"[bold]softsym benchmark: symmetry for any model[/] ({mode}; {args.threads} torch thread(s); "
                  f"torch {info['torch']}, {info['cpu_count']} CPUs, load {info['loadavg_at_start']})")
    t_start = time.perf_counter()

    wrappers = bench_wrappers(args.quick)
    table = Table(title="1. wrappers: float64 equivariance error on generic inputs, forward time (batch 1000, "
                        "best of alternating runs)")
    for col in ("wrapper", "group", "|frame|", "error max", "base model error", "base ms", "wrapped ms",
                "wrapped / base", "/ |frame|", "overhead ms"):
        table.add_column(col, justify="left" if col in ("wrapper", "group") else "right")
    for r in wrappers:
        table.add_row(r["wrapper"], r["group"], str(r["frame"]), fmt(r["error_max"]), fmt(r["base_error_max"]),
                      f"{r['base_ms']:.2f}", f"{r['wrapped_ms']:.2f}", f"{r['ratio']:.2f}",
                      f"{r['ratio_per_frame']:.2f}", f"{r['wrapped_ms'] - r['frame'] * r['base_ms']:.1f}")
    console.print(table)
    ok_err = all(r["error_max"] < 1e-10 for r in wrappers)
    ok_time = all(r["ratio_per_frame"] <= 1.0 for r in wrappers if r["wrapper"].startswith("FrameAverage"))
    console.print(f"targets: error < 1e-10 for every wrapper: {'[green]met[/]' if ok_err else '[red]NOT met[/]'}; "
                  f"frame averaging <= |frame| x base time: {'[green]met[/]' if ok_time else '[red]NOT met[/]'}")
    console.print("errors: EMLP's scale-adjusted relative error, max over 32 Haar samples (finite groups: all "
                  "elements; E(3)/SE(3): random rotation + N(0,1) translation) on 64 inputs; 'base model error' is "
                  "the unwrapped MLP (MLP 20-256-256-9, or 20-1024-1024-9, on clouds of 5 points with one scalar "
                  "channel). "
                  "Times: best of alternating runs on 1000 inputs (thread CPU time with 1 torch thread), base time per call over |frame| distinct batches; "
                  "overhead = wrapped - |frame| x base (eigendecomposition of 1000 3x3 covariances, bookkeeping).")

    inertia = bench_inertia(epochs, args.strength, args.penalty_samples)
    table = Table(title=f"2. Inertia (N=1000, {epochs} epochs, float32 MLP 20-256-256-9, O(3) penalty strength "
                        f"{args.strength:g} ramped linearly from 0 over training, "
                        f"{args.penalty_samples} samples/input)")
    for col in ("model", "test MSE", "train MSE", "equiv. err mean", "equiv. err max", "train s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m in inertia["models"].items():
        table.add_row(name, f"{m['test_mse']:.4f}", f"{m['train_mse']:.4f}", fmt(m["eq_mean"]), fmt(m["eq_max"]),
                      f"{m['train_seconds']:.1f}")
    console.print(table)
    met = "[green]met[/]" if inertia["targets_met"] else "[red]NOT met[/]"
    console.print(f"penalised / plain test MSE = {inertia['mse_ratio']:.3f} (target <= 0.5); equivariance error "
                  f"{inertia['eq_reduction']:.1f}x lower (target >= 10x): {met}"
                  + (" [yellow](quick mode: fewer epochs than the targets assume)[/]" if args.quick else ""))

    lie = bench_lie(args.quick)
    table = Table(title="3. Lie-derivative error (float64, O(3) on 5V0+5V -> V**2, 64 inputs)")
    for col in ("model", "Lie max", "Lie mean", "per generator", "AD", "equiv. err max"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in lie:
        table.add_row(r["model"], fmt(r["lie_max"]), fmt(r["lie_mean"]),
                      ", ".join(f"{e:.1e}" for e in r["per_generator"]) or "-", r["method"], fmt(r["eq_max"]))
    console.print(table)
    exact_rows = [r for r in lie if "negative control" not in r["model"]]
    ok_lie = all(r["lie_max"] < 1e-8 for r in exact_rows)
    console.print("AD: jvp = torch.func.jvp; vjp = reverse mode twice, used when a custom autograd.Function has no "
                  "forward-mode rule (softsym.nn's layers switch to plain torch ops under torch.func, so they use jvp) "
                  "and only after agreeing with 4th-order finite "
                  "differences; fd = those finite differences")
    console.print(f"target: Lie-derivative error < 1e-8 for the exact models: "
                  f"{'[green]met[/]' if ok_lie else '[red]NOT met[/]'}")

    total = time.perf_counter() - t_start
    result = {"benchmark": "any_model", "mode": "quick" if args.quick else "full", "epochs": epochs,
              "machine": info, "seconds": total, "wrappers": wrappers, "inertia": inertia, "lie": lie,
              "targets": {"wrapper_error": ok_err, "frame_time": ok_time, "inertia": inertia["targets_met"],
                          "lie": ok_lie}}
    out = args.out or RESULTS / f"any_model-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    console.print(f"total {total:.0f} s; results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
