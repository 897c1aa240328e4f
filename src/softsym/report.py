"""Summaries and plots of training runs: aggregation over seeds, paired "beats" tests, comparison figures.

Used by ``softsym compare`` and ``benchmarks/models.py``. Inputs are the ``metrics`` dicts that
:meth:`softsym.train.Trainer.fit` returns (and writes to ``metrics.json``). matplotlib is imported lazily with the
Agg backend, so nothing here needs a display.
"""
from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Sequence, Union

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from .data.synthetic import Task

__all__ = ["summarize", "paired_difference", "beats", "plot_comparison", "format_mse", "symmetry_report",
           "plot_symmetry_report", "format_increase", "exact_model_comparison",
           "combine_verdicts", "add_exact_comparison"]


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
    """An MSE for tables, e.g. "0.00123 ± 4.5e-05" (mean to 3, std to 2 significant digits); "-" if not finite."""
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


def plot_comparison(summary: Dict[str, Dict], runs: Sequence[Dict], path: Union[str, Path], title: str = "") -> str:
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


# ====================================================================== symmetry report
#: one-sided p-value thresholds of the symmetry test: >= HOLDS_P "holds", < BROKEN_P "broken", between "uncertain"
HOLDS_P, BROKEN_P = 0.05, 1e-3


def _verdict(p: float, no_power: bool) -> str:
    if no_power:
        return "untestable"
    if p >= HOLDS_P:
        return "holds"
    return "broken" if p < BROKEN_P else "uncertain"


def format_increase(value: float) -> str:
    """A report's relative loss increase: "+12.3%", or "x1.9e+04" (the transformed loss over the probe's) when large."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{100 * value:+.1f}%" if abs(value) < 10 else f"x{1 + value:.3g}"


def _signed_rank_z(d, tol: float) -> float:
    """Wilcoxon signed-rank statistic of d (entries with |d| <= tol dropped) as a z-score (normal approximation):
    large when d is shifted to positive values."""
    import torch

    d = d[d.abs() > tol]
    n = int(d.numel())
    if n == 0:
        return 0.0
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[d.abs().argsort()] = torch.arange(1, n + 1, dtype=torch.float64)
    w = float(ranks[d > 0].sum())
    mean, var = n * (n + 1) / 4.0, n * (n + 1) * (2 * n + 1) / 24.0
    return (w - mean) / math.sqrt(var)


def _max_signed_rank_z(n: int) -> float:
    """The largest z-score :func:`_signed_rank_z` can give with n non-zero differences (all of them positive)."""
    if n < 1:
        return 0.0
    w, mean, var = n * (n + 1) / 2.0, n * (n + 1) / 4.0, n * (n + 1) * (2 * n + 1) / 24.0
    return (w - mean) / math.sqrt(var)


def _min_p(n: int) -> float:
    """The smallest one-sided p-value the signed-rank test can reach with n samples."""
    return 0.5 * math.erfc(_max_signed_rank_z(n) / math.sqrt(2.0))


def _powerless(n: int) -> bool:
    """True when n samples cannot reach p < BROKEN_P (n < 13): a broken symmetry could never be called broken, so
    a passed test would say nothing either."""
    return _min_p(n) >= BROKEN_P


def _candidate_list(candidates, task) -> list:
    from .errors import ConfigError

    if isinstance(candidates, str):
        raise ConfigError(f"candidates must be a list of group specs, got the string {candidates!r}; wrap it in a "
                          f"list: [{candidates!r}]")
    if candidates is None:
        return list(task.candidates)
    if isinstance(candidates, (set, frozenset)):
        raise ConfigError("candidates must be a list (a set has no stable order); e.g. sorted(your_set)")
    if not hasattr(candidates, "__iter__"):
        raise ConfigError(f"candidates must be a list of group specs or Groups, got {type(candidates).__name__} "
                          f"{candidates!r}")
    out = list(candidates)
    if not out:
        raise ConfigError("candidates is empty; give at least one group spec, or None for the task's candidates")
    from .groups.parse import parse_group
    from .groups.skeleton import group_identity

    seen: Dict[object, str] = {}
    for c in out:  # the same group under two spellings ("O(3)", "o(3)"; "Signs(3)", "Skeleton(O(3))") is tested once
        label = c if isinstance(c, str) else getattr(c, "name", repr(c))
        key = group_identity(parse_group(c))
        if key in seen:
            raise ConfigError(f"candidates lists the same group twice ({seen[key]!r} and {label!r}); give each "
                              "candidate once")
        seen[key] = label
    return out


def _check_split(task, split: str):
    from .errors import ConfigError

    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be 'train', 'val' or 'test', got {split!r}")
    return task.splits()[split]


def symmetry_report(model: Union[torch.nn.Module, Callable], task: Task, candidates: Optional[Sequence[str]] = None,
                    *, split: str = "test", group_samples: int = 16, seed: int = 0, batch: int = 4096,
                    skeletons: bool = False) -> Dict:
    """Which candidate symmetries the data supports, and how strongly, tested with a trained model.

    For every candidate G_j, held-out sample z_i = (x_i, y_i) (``split``, default the test split) and each of
    ``group_samples`` rounds k, with a fresh group element g_ik per sample and round:

        d_ik = l(f(rho_in(g_ik) x_i), rho_out(g_ik) y_i) - l(f(x_i), y_i)        (l = squared error per sample)

    If G_j is a symmetry of the data distribution and g is drawn from the Haar (uniform) measure, z and g z are
    exchangeable for any model f not fitted on this split, so every d_ik is symmetric about 0; a broken symmetry
    makes a model that learned the data fit the transformed samples worse (d > 0). Each round gives a Wilcoxon
    signed-rank z-score (exact symmetry under H0, robust to the heavy tails of squared errors, unlike a t-test);
    ``z`` is their mean (a conservative combination of dependent N(0, 1) scores) and ``p_value`` = P(Z >= z).
    Verdicts: "holds" (p >= 0.05), "uncertain", "broken" (p < 0.001); the effect size ``loss_increase`` =
    mean(d) / mean l(f(x), y) says how much worse the model does on transformed data, relative to its own error.
    Non-compact groups have no Haar probability: their sampler's spread makes the test approximate.

    The test uses the model as a learned feature map: its power grows with how well the model fits the data, and an
    exactly G_j-equivariant model has d = 0 for G_j (orthogonal rho_out), so it cannot test G_j ("untestable"). Use
    an unconstrained model (e.g. ``build_model("mlp", task)``) as the probe; ``softsym report`` trains one.
    ``skeletons=True`` also tests each candidate's finite skeleton (as ``softsym report`` does by default).
    The probe may be any ``nn.Module`` or a plain callable (called in float64); NaN outputs or outputs not shaped
    like the targets are a ModelError.
    """
    import numpy as np
    import torch

    from .errors import ConfigError
    from .groups.parse import parse_group
    from .reps.algebra import rep as make_rep

    for label, v, low in (("group_samples", group_samples, 1), ("seed", seed, 0), ("batch", batch, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ConfigError(f"{label} must be a {'positive' if low else 'non-negative'} integer, got {v!r}")
    x, y = _check_split(task, split)
    if len(x) < 2:
        raise ConfigError(f"the {split} split has {len(x)} sample(s); the symmetry test needs at least 2")
    cands = _candidate_list(candidates, task)
    if skeletons:
        from .groups.skeleton import skeleton_candidates

        cands += [spec for spec, _ in skeleton_candidates(cands) if spec not in cands]
    # with few samples the signed-rank test cannot reach p < BROKEN_P: "holds" would only mean "too few samples"
    powerless = _powerless(len(x))
    x64, y64 = x.double(), y.double()
    dtype, device = _probe_dtype_device(model, "symmetry_report")

    # a gap at round-off level of the model's dtype: the probe is exactly equivariant to that candidate
    exact_tol = 1e-9 if dtype == torch.float64 else 1e-5

    def loss(inp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = _batched_outputs(model, inp, target.shape[1], dtype, device, batch, "symmetry_report")
        return ((out - target) ** 2).mean(-1)

    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    rows = []
    try:
        with torch.no_grad():
            base = loss(x64, y64)
            base_mean = float(base.mean())
            constant_mse = _constant_mse(task, y64)
            # a constant target up to round-off (3.3 - mean(3.3, ...) is 1e-16, not 0)
            constant = constant_mse <= 1e-20 * max(float((y64 ** 2).mean()), 1e-300)
            unlearned = not constant and base_mean >= constant_mse
            scale = max(base_mean + float((y64 ** 2).mean()), 1e-300)  # round-off level of a loss difference
            groups = []
            for spec in cands:  # every candidate is checked before any is tested
                group = parse_group(spec)
                rin, rout = make_rep(task.rep_in, group), make_rep(task.rep_out, group)
                if rin.size != x64.shape[1] or rout.size != y64.shape[1]:
                    raise ConfigError(f"candidate {spec!r} gives reps of sizes {rin.size} -> {rout.size}, but the "
                                      f"data has {x64.shape[1]} inputs and {y64.shape[1]} targets; give candidates "
                                      f"acting on the same space as {task.group}")
                groups.append((group, rin, rout))
            for j, (spec, (group, rin, rout)) in enumerate(zip(cands, groups)):
                if not isinstance(spec, str):
                    spec = group.name
                if group.is_complex:  # a complex group cannot act on real data: nothing to test
                    rows.append({"group": spec, "candidate": spec, "z": 0.0, "p_value": 1.0, "mean_gap": float("nan"),
                                 "loss_increase": float("nan"), "verdict": "untestable", "group_samples": 0,
                                 "reason": f"{group.name} is a complex group: it cannot act on real data"})
                    continue
                # seeded by the candidate itself, not its position: a candidate's z does not depend on the list
                rng = np.random.default_rng([seed, zlib.crc32(group.key.encode()), 2718])
                tol = exact_tol * scale
                gaps, zs = [], []
                for _ in range(group_samples):  # a fresh element per sample: the pairs (z_i, g_i z_i) are independent
                    g = group.sample(len(x64), generator=rng)
                    d = loss(rin.rho(g).apply(x64), rout.rho(g).apply(y64)) - base
                    gaps.append(d)
                    zs.append(_signed_rank_z(d, tol))
                d = torch.stack(gaps)
                m = float(d.mean())
                no_power = float(d.abs().max()) <= tol
                z = 0.0 if no_power else float(np.mean(zs))
                p = 0.5 * math.erfc(z / math.sqrt(2.0))
                row = {"group": spec, "candidate": spec, "z": z, "p_value": p, "mean_gap": m,
                       "loss_increase": m / base_mean if base_mean > 0 else float("nan"),
                       "verdict": _verdict(p, no_power or powerless), "group_samples": group_samples}
                if constant:
                    row["reason"] = (f"the {split} targets equal the training mean: every group holds trivially for "
                                     "a constant target")
                elif unlearned and row["verdict"] == "holds":  # no power, not evidence ("broken" stays valid)
                    row["verdict"] = "uncertain"
                    row["reason"] = (f"the probe's {split} MSE ({base_mean:.4g}) is no better than predicting the "
                                     f"training mean ({constant_mse:.4g}): it has not learned the target, so a "
                                     "passed test means nothing; train it longer or on more data")
                elif no_power:
                    row["reason"] = "the probe is exactly equivariant to this group (no loss change)"
                elif powerless:
                    row["reason"] = (f"{len(x64)} {split} samples are too few for the signed-rank test to reach "
                                     f"p < {BROKEN_P:g} (smallest possible p {_min_p(len(x64)):.3g}); give a larger "
                                     "split (--n-test)")
                rows.append(row)
    finally:
        if isinstance(model, torch.nn.Module):
            model.train(was_training)
    return {"task": getattr(task, "name", None), "split": split, "n_samples": int(len(x64)),
            "model": getattr(model, "model_name", type(model).__name__), "base_mse": base_mean,
            "constant_mse": constant_mse, "seed": seed,
            "thresholds": {"holds_p": HOLDS_P, "broken_p": BROKEN_P}, "candidates": rows}


def plot_symmetry_report(report: Dict, path: Union[str, Path]) -> str:
    """Write a PNG: per candidate, the loss increase under the group (bars, coloured by verdict) and its z-score."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = report["candidates"]
    colours = {"holds": "#55a868", "uncertain": "#dd8452", "broken": "#c44e52", "untestable": "0.6"}
    exact = [r.get("exact") for r in rows]
    has_exact = any(e is not None for e in exact)
    fig, axes = plt.subplots(1, 3 if has_exact else 2, figsize=(15.0 if has_exact else 10.0, 0.45 * len(rows) + 1.8),
                             squeeze=False)
    names = [r["group"] for r in rows][::-1]
    for ax, key, label in ((axes[0][0], "loss_increase", "loss increase under the group (relative)"),
                           (axes[0][1], "z", "signed-rank z-score (one-sided)")):
        vals = [r[key] for r in rows][::-1]
        ax.barh(range(len(rows)), vals, color=[colours[r["verdict"]] for r in rows][::-1])
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(names)
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_xlabel(label)
        finite = [abs(v) for v in vals if v == v and abs(v) != float("inf")]
        if key == "loss_increase" and finite and max(finite) > 10 * max(min(finite), 1e-3):
            ax.set_xscale("symlog", linthresh=0.01)  # "holds" bars (~0) stay visible next to x1000 ones
            ax.set_xlabel(label + ", symlog")
    if has_exact:
        ax = axes[0][2]
        vals = [e["loss_ratio"] if e else float("nan") for e in exact][::-1]
        ax.barh(range(len(rows)), vals, color=[colours[e["verdict"]] if e else "0.8" for e in exact][::-1])
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(names)
        ax.set_xscale("log")
        ax.axvline(1.0, color="0.3", lw=0.8)
        ax.set_xlabel("exact model's test MSE / probe's")
    z = 1.6448536269514722  # one-sided 5 % point of N(0, 1)
    axes[0][1].axvline(z, color="0.5", ls="--", lw=0.8)
    axes[0][0].set_title(f"{report['task']}: {report['model']} on the {report['split']} split (n={report['n_samples']})",
                         fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    fig.legend(handles, list(colours), fontsize=8, loc="lower center", ncol=len(colours), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))  # room for the legend below the panels, off the bars
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _constant_mse(task, y) -> float:
    """MSE on targets ``y`` of predicting the training split's mean target: the bar a probe must beat to have learned
    anything (NaN without training targets)."""
    y_train = task.splits()["train"][1].double()
    if not len(y_train):
        return float("nan")
    return float(((y.double() - y_train.mean(0)) ** 2).mean(-1).mean())


def _probe_dtype_device(model, who: str):
    """(dtype, device) the probe takes its inputs in: its parameters', float64 on the CPU for a plain callable."""
    import torch

    from .errors import ConfigError

    if isinstance(model, torch.nn.Module):
        params = list(model.parameters())
        return (params[0].dtype, params[0].device) if params else (torch.float64, torch.device("cpu"))
    if callable(model):
        return torch.float64, torch.device("cpu")
    raise ConfigError(f"{who} needs a model (a torch.nn.Module or a callable on (batch, n_in) tensors), got "
                      f"{type(model).__name__}")


def _batched_outputs(model, x, n_out: int, dtype, device, batch: int, who: str):
    """model(x) in batches, as float64 on the CPU; a ModelError when an output is not a finite (batch, n_out)
    tensor (a NaN would drop out of the signed-rank test and a (batch,) output would broadcast into an (n, n)
    loss, and both made every candidate "hold")."""
    import torch

    from .errors import ModelError
    from .metrics import call_model

    outs = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(device=device, dtype=dtype)
        out = call_model(model, xb, who)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(xb), n_out):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(f"{who}: the model returned {got} for {len(xb)} inputs, but the targets have shape "
                             f"({len(xb)}, {n_out}); the model's output must match the targets")
        out = out.detach().double().cpu()
        if not bool(torch.isfinite(out).all()):
            raise ModelError(f"{who}: the model returned {int((~torch.isfinite(out)).sum())} NaN / inf outputs; a "
                             "probe must give finite predictions (check its forward pass or its training)")
        outs.append(out)
    return torch.cat(outs)


def _split_losses(model, x, y, batch: int = 4096, who: str = "exact_model_comparison"):
    """Per-sample squared error (float64) of ``model`` on (x, y), evaluated without gradients."""
    import torch

    dtype, device = _probe_dtype_device(model, who)
    was_training = getattr(model, "training", None)
    if was_training is not None:
        model.eval()
    try:
        with torch.no_grad():
            out = _batched_outputs(model, x, y.shape[1], dtype, device, batch, who)
    finally:
        if was_training is not None:
            model.train(was_training)
    return ((out - y.double()) ** 2).mean(-1)


#: exact-model comparison: "holds" when the exact model's test loss is at most HOLDS_RATIO x the probe's (or not
#: significantly worse), "broken" when it is significantly worse (p < BROKEN_P) and more than BROKEN_RATIO x
HOLDS_RATIO, BROKEN_RATIO = 1.1, 1.5
#: ... and "broken" also needs the exact model's excess loss to be this fraction of the constant predictor's MSE
#: (the target's variance): on noise-free data a probe near zero error makes optimisation noise look like a
#: large ratio
BROKEN_GAP = 0.05


def exact_model_comparison(probe: torch.nn.Module, exact_models: Dict[str, object], task: Task, *,
                           split: str = "test") -> Dict[str, Dict]:
    """Whether the target *function* is equivariant: each candidate's exactly equivariant model against the
    unconstrained probe, both trained on the training split, compared on held-out samples.

    e_i = l(f_G(x_i), y_i) - l(f(x_i), y_i); a Wilcoxon signed-rank z-score of e > 0 and the loss ratio
    mean l(f_G) / mean l(f). A broken symmetry makes the exact model unable to fit the data (ratio well above 1);
    under a true symmetry the exact model generalises at least about as well. Unlike the distribution test this
    needs no symmetric input distribution (non-compact groups, inputs in a fixed frame), but it compares two trained
    models, so its verdicts use heuristic ratio thresholds: "holds" (ratio <= 1.1, or p >= 0.05 with the exact model
    beating the constant predictor), "broken" (p < 0.001, ratio > 1.5 and an excess loss above BROKEN_GAP of the
    constant predictor's MSE), else "uncertain"; always "uncertain" (with a ``reason``) when the probe is no
    better than predicting the training mean of y, since then neither model has shown what the target is.
    """
    x, y = _check_split(task, split)
    base = _split_losses(probe, x, y)
    base_mean = float(base.mean())
    # a probe no better than predicting the training mean has not learned the target: no ratio means anything
    constant_mean = _constant_mse(task, y)
    unlearned = constant_mean > 0 and base_mean >= constant_mean  # (a constant target: any perfect fit is a fit)
    # with too few samples no difference is significant: the loss ratio alone can then say "holds"
    powerless = _powerless(len(x))
    out = {}
    for spec, model in exact_models.items():
        e = _split_losses(model, x, y) - base
        z = _signed_rank_z(e, 1e-12 * max(base_mean, 1e-300))
        p = 0.5 * math.erfc(z / math.sqrt(2.0))
        exact_mean = float((e + base).mean())
        if base_mean > 0:
            ratio = exact_mean / base_mean
        else:  # a perfect probe: an exact model as perfect is as good (0 / 0 -> 1)
            ratio = 1.0 if exact_mean <= 0 else float("inf")
        gap = (exact_mean - base_mean) / constant_mean if constant_mean > 0 else float("inf")
        beats_constant = not (constant_mean > 0 and exact_mean >= constant_mean)
        if unlearned:
            verdict = "uncertain"
        elif ratio <= HOLDS_RATIO or (p >= HOLDS_P and not powerless and beats_constant):
            verdict = "holds"
        elif p < BROKEN_P and ratio > BROKEN_RATIO and gap > BROKEN_GAP:
            verdict = "broken"
        else:
            verdict = "uncertain"
        out[spec] = {"loss_ratio": ratio, "z": z, "p_value": p, "verdict": verdict, "gap_of_variance": gap,
                     "exact_mse": exact_mean, "probe_mse": base_mean, "constant_mse": constant_mean}
        if unlearned:
            out[spec]["reason"] = (f"the probe's {split} MSE ({base_mean:.4g}) is no better than predicting the "
                                   f"training mean ({constant_mean:.4g}): it has not learned the target, so the "
                                   "comparison says nothing; train longer (--epochs) or on more data (--n-train)")
        elif powerless and verdict == "uncertain":
            out[spec]["reason"] = (f"{len(x)} {split} samples are too few for a significant difference; give a "
                                   "larger split (--n-test)")
    return out


def combine_verdicts(distribution: str, exact: Optional[str]) -> str:
    """Overall verdict of a candidate from the distribution test and (if run) the exact-model comparison.

    The exact-model comparison decides whether the target function is equivariant; "holds (function only)" means
    it is, but (x, y) is not symmetrically distributed (the inputs are not, e.g. a fixed frame or a non-compact
    group): augmentation with the group would leave the data's support. An "uncertain" comparison (often an exact
    model trained too briefly) leaves a passed distribution test standing; after a failed one it stays uncertain."""
    from .errors import ConfigError

    known = ("holds", "uncertain", "broken", "untestable")
    if distribution not in known:
        raise ConfigError(f"unknown distribution-test verdict {distribution!r}; expected one of {', '.join(known)}")
    if exact not in (None, "n/a", "holds", "uncertain", "broken"):
        raise ConfigError(f"unknown exact-model verdict {exact!r}; expected holds, uncertain, broken, 'n/a' or None")
    if exact is None or exact == "n/a":
        return distribution
    if exact == "holds":  # "function only" needs real evidence against the inputs' symmetry, not a weak test
        return "holds (function only)" if distribution == "broken" else "holds"
    if exact == "uncertain" and distribution == "holds":
        return "holds"  # an inconclusive heuristic comparison does not outweigh a passed exchangeability test
    if exact == "broken" and distribution == "holds":
        return "uncertain"  # the tests disagree: an exact model that trains slowly can lose to the probe
    return exact


def add_exact_comparison(report: Dict, comparison: Dict[str, Dict]) -> Dict:
    """Merge :func:`exact_model_comparison` results into a :func:`symmetry_report` (in place): every row gets
    ``exact`` (or None) and ``overall``."""
    for row in report["candidates"]:
        ex = comparison.get(row["group"])
        row["exact"] = ex
        row["overall"] = combine_verdicts(row["verdict"], ex["verdict"] if ex else None)
    report["exact_thresholds"] = {"holds_ratio": HOLDS_RATIO, "broken_ratio": BROKEN_RATIO, "holds_p": HOLDS_P,
                                  "broken_p": BROKEN_P, "broken_gap": BROKEN_GAP}
    return report
