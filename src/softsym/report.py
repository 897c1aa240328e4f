"""Summaries and plots of training runs: aggregation over seeds, paired "beats" tests, comparison figures.

Used by ``softsym compare`` and ``benchmarks/models.py``. Inputs are the ``metrics`` dicts that
:meth:`softsym.train.Trainer.fit` returns (and writes to ``metrics.json``). matplotlib is imported lazily with the
Agg backend, so nothing here needs a display.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence

__all__ = ["summarize", "paired_difference", "beats", "plot_comparison", "format_mse"]


def _mean_std(values: Sequence[float]):
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, 0.0
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)  # sample std (ddof = 1)
    return m, math.sqrt(var)


def format_mse(mean: float, std: Optional[float] = None) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    text = f"{mean:.3g}"
    if std is not None and math.isfinite(std) and std > 0:
        text += f" ± {std:.2g}"
    return text


def summarize(runs: Iterable[Dict]) -> Dict[str, Dict]:
    """Aggregate finished runs by model: mean/std of test MSE over seeds (sample std), mean equivariance error per
    candidate, mean final strengths, parameter count, build / step time and tuner overhead.

    Returns {model name: summary dict} in first-seen order.
    """
    groups: Dict[str, List[Dict]] = {}
    for r in runs:
        if r.get("finished", True):
            groups.setdefault(r["model"], []).append(r)
    out = {}
    for name, rs in groups.items():
        rs = sorted(rs, key=lambda r: r.get("seed", 0))
        mse = [r["test_mse"] for r in rs]
        m, s = _mean_std(mse)
        eq: Dict[str, float] = {}
        for g in rs[0].get("equivariance", {}):
            eq[g] = _mean_std([r["equivariance"][g]["mean"] for r in rs if g in r.get("equivariance", {})])[0]
        strengths = None
        if rs[0].get("strengths"):
            strengths = {k: _geo_mean([r["strengths"][k] for r in rs if r.get("strengths")]) for k in rs[0]["strengths"]}
        out[name] = {
            "model": name, "n_seeds": len(rs), "seeds": [r.get("seed") for r in rs],
            "test_mse_mean": m, "test_mse_std": s, "test_mse": mse,
            "train_mse_mean": _mean_std([r.get("train_mse") for r in rs])[0],
            "val_mse_mean": _mean_std([r.get("val_mse") for r in rs])[0],
            "equivariance": eq, "strengths": strengths,
            "n_parameters": rs[0].get("n_parameters"),
            "build_seconds": _mean_std([r.get("build_seconds", 0.0) for r in rs])[0],
            "step_seconds": _mean_std([r.get("step_seconds", 0.0) for r in rs])[0],
            "train_seconds": _mean_std([r.get("train_seconds", 0.0) for r in rs])[0],
            "tuner_overhead_fraction": _mean_std([r.get("tuner_overhead_fraction", 0.0) for r in rs])[0],
        }
    return out


def _geo_mean(values: Sequence[float]) -> float:
    """Geometric mean (strengths span orders of magnitude); 0 if any value is 0."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan")
    if any(v <= 0 for v in vals):
        return 0.0
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def paired_difference(runs: Iterable[Dict], a: str, b: str, key: str = "test_mse") -> Dict:
    """Per-seed difference key(a) - key(b) over the seeds both models finished: mean, std (ddof 1), n."""
    by = {}
    for r in runs:
        if r.get("finished", True) and r["model"] in (a, b):
            by.setdefault(r.get("seed"), {})[r["model"]] = r[key]
    diffs = [v[a] - v[b] for v in by.values() if a in v and b in v]
    m, s = _mean_std(diffs)
    return {"a": a, "b": b, "n": len(diffs), "mean": m, "std": s, "diffs": diffs}


def beats(runs: Iterable[Dict], a: str, b: str, min_seeds: int = 3) -> Optional[bool]:
    """True when ``a`` has lower mean test MSE than ``b`` by more than the std of the per-seed difference
    (over >= min_seeds paired seeds); None when there are too few seeds to say."""
    d = paired_difference(list(runs), a, b)
    if d["n"] < min_seeds:
        return None
    return bool(-d["mean"] > d["std"])


def plot_comparison(summary: Dict[str, Dict], runs: Sequence[Dict], path, title: str = "") -> str:
    """Write a PNG: test MSE bars (mean ± std over seeds, log scale) and, for soft models, the trajectory of
    every candidate's strength (first seed). Returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    soft_runs = {}
    for r in sorted(runs, key=lambda r: r.get("seed", 0)):
        if r.get("history") and r["model"] not in soft_runs:
            soft_runs[r["model"]] = r
    ncols = 1 + len(soft_runs)
    fig, axes = plt.subplots(1, ncols, figsize=(5.0 * ncols, 4.0), squeeze=False)
    ax = axes[0][0]
    names = list(summary)
    means = [summary[n]["test_mse_mean"] for n in names]
    stds = [summary[n]["test_mse_std"] for n in names]
    ax.bar(range(len(names)), means, yerr=stds, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("test MSE (raw targets)")
    ax.set_title(title or "test MSE, mean ± std over seeds")
    for k, (name, r) in enumerate(soft_runs.items(), start=1):
        ax = axes[0][k]
        hist = r["history"]
        steps = [h["step"] for h in hist]
        cands = r.get("candidates") or [f"g{j}" for j in range(len(hist[0]["strengths"]))]
        for j, c in enumerate(cands):
            vals = [max(h["strengths"][j], 1e-12) for h in hist]
            ax.plot(steps, vals, label=c)
        for h in hist:  # tuner events worth seeing: PER's one-time adjustment, the soft tuner's restart
            if h.get("event") in ("adjust", "restart"):
                ax.axvline(h["step"], color="0.5", ls="--", lw=0.8)
                ax.annotate(h["event"], (h["step"], 1), xycoords=("data", "axes fraction"), fontsize=7,
                            color="0.4", ha="left", va="top", rotation=90)
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("strength λ_j")
        ax.set_title(f"{name}: strengths (seed {r.get('seed')})")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
