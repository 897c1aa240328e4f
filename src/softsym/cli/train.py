"""`softsym fit` (train one model on a synthetic task or your data) and `softsym compare` (several models x seeds)."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Dict, List, Optional

import typer

from ._common import console, dumps_strict, err_console

_TASK_HELP = ("Task: o5synthetic, inertia, particle-interaction, mixed-inertia:{o3,o2x,o2y,o2z,none}.")
_MODEL_HELP = "Model: mlp, emlp, emlp:<group> (e.g. emlp:O(2)@z), rpp, per, soft."


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


#: default cap on the epochs of softsym report's probe and exact models (MixedInertia's protocol has 8000)
REPORT_MAX_EPOCHS = 500

_DATA_HELP = ("Your own data instead of --task: an .npz (arrays x, y, or x_train, y_train [, x_val, y_val, x_test, "
              "y_test]) or a .csv (inputs then targets per row, optional header); needs --group, --rep-in, --rep-out. "
              "Split seeded by --seed (15 % val, 15 % test unless --n-val / --n-test), normalised per rep copy.")


class TaskSource:
    """What ``--task`` or ``--data`` (+ ``--group``, ``--rep-in``, ``--rep-out``) name, checked before any training;
    ``make(seed, n_train, n_val, n_test)`` builds the Task."""

    def __init__(self, task: Optional[str], data: Optional[Path] = None, group: Optional[str] = None,
                 rep_in: Optional[str] = None, rep_out: Optional[str] = None, candidates=None):
        from ..errors import ConfigError

        if (task is None) == (data is None):
            raise ConfigError("give either --task NAME (a synthetic task) or --data FILE (your own data), not "
                              + ("both" if task is not None else "neither"))
        given = {"--group": group, "--rep-in": rep_in, "--rep-out": rep_out}
        if task is not None and any(v is not None for v in given.values()):
            extra = ", ".join(k for k, v in given.items() if v is not None)
            raise ConfigError(f"{extra} only apply to --data: a synthetic task has its own group and reps")
        if data is not None and any(v is None for v in given.values()):
            missing = ", ".join(k for k, v in given.items() if v is None)
            raise ConfigError(f"--data needs {missing}: the group and the reps of the inputs and targets, e.g. "
                              "--group 'O(3)' --rep-in '5V0+5V' --rep-out 'V**2'")
        self.task, self.data, self.group, self.rep_in, self.rep_out = task, data, group, rep_in, rep_out
        self.candidates = candidates

    @property
    def label(self) -> str:
        return self.task if self.task is not None else f"data:{Path(self.data).name}"

    def make(self, seed: int, n_train: Optional[int], n_val, n_test):
        from ..data import load_task, make_task

        if self.task is not None:
            return make_task(self.task, n_train=1000 if n_train is None else n_train, n_val=n_val, n_test=n_test,
                             seed=seed)
        return load_task(self.data, group=self.group, rep_in=self.rep_in, rep_out=self.rep_out,
                         candidates=self.candidates, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)


def _run_one(source: "TaskSource", model_name: str, *, seed: int, n_train: Optional[int], n_val, n_test, epochs, ch,
             num_layers, lr, batch_size, weight_decay, tuner, run_dir, resume, overwrite, progress, eq_samples=16,
             tuner_options=None, replace_different=False, schedule=None, candidates=None, skeletons=None,
             strict_skeletons=True, nproc=1, reused: bool = False):
    """Build and train one model for a CLI command; ``reused``: the command (compare, report) reuses its runs, so
    the trainer's messages say "run the same command again" rather than --resume."""
    from ..models import build_model
    from ..train import Trainer, default_config, message_wording

    task = source.make(seed, n_train, n_val, n_test)
    model = build_model(model_name, task, ch=ch, num_layers=num_layers, seed=seed,
                        **_candidate_opts(candidates, model_name, skeletons, strict_skeletons))
    cfg = default_config(task, model_name, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                         schedule=schedule, seed=seed, run_dir=run_dir, resume=resume, overwrite=overwrite, progress=progress,
                         tuner=tuner, equivariance_samples=eq_samples, tuner_options=tuner_options or {},
                         world_size=nproc)
    if reused:
        wording = dict(resume="the same command again (finished runs are reused)", overwrite="--overwrite",
                       run_dir="--out")
    else:
        wording = dict(resume="--resume", overwrite="--overwrite", run_dir="--run-dir")
    with message_wording(**wording):
        trainer = Trainer(model, task, cfg)
        if replace_different and run_dir and not trainer.same_run_in_dir():
            cfg.resume, cfg.overwrite = False, True
        return trainer.fit()


def _interrupted_summary(run_dir: Optional[Path], exc: BaseException,
                         resume: str = "add --resume to the same command") -> dict:
    """What ``fit --json`` (and ``report --json``) prints for an interrupted run: not finished, the last epoch logged
    in the run directory (None without one) and how to resume."""
    epoch = None
    log = run_dir / "metrics.jsonl" if run_dir is not None else None
    if log is not None and log.exists():
        for line in reversed(log.read_text().splitlines()):
            try:
                epoch = int(json.loads(line)["epoch"])
                break
            except (ValueError, KeyError, TypeError):
                continue
    out = {"finished": False, "interrupted": True, "epoch": epoch, "message": str(exc) or "interrupted",
           "run_dir": str(run_dir) if run_dir is not None else None}
    out["resume"] = resume if run_dir is not None and (run_dir / "last.pt").exists() else None
    return out


_CANDIDATES_HELP = ("Candidate groups of the soft models (per, soft), separated by ';' (group specs contain commas), "
                    "e.g. \"O(3);O(2)@z;Signs(3)\" (default: the task's candidates).")


def _parse_candidates(text: Optional[str]) -> Optional[List[str]]:
    """'O(3); O(2)@z' -> ['O(3)', 'O(2)@z'] (None when not given)."""
    from ..errors import ConfigError

    if text is None:
        return None
    specs = [c.strip() for c in text.split(";") if c.strip()]
    if not specs:
        raise ConfigError("--candidates is empty; give group specs separated by ';', e.g. \"O(3);O(2)@z\"")
    if len(set(specs)) != len(specs):
        raise ConfigError(f"--candidates lists a group twice: {text!r}; give every candidate once")
    from ..errors import GroupError
    from ..groups.parse import parse_group

    for spec in specs:  # "O(3),O(2)@z": commas belong to group specs (O(1,3), @[0,1]), ';' separates candidates
        try:
            parse_group(spec)
        except GroupError as exc:
            if "," in spec and re.search(r"\),\s*[A-Za-z]", spec):
                raise ConfigError(f"--candidates {text!r}: separate candidates with ';', not ',' (commas are part of "
                                  f"group specs such as O(1,3)), e.g. \"{spec.replace(',', ';')}\"") from None
            raise ConfigError(f"--candidates: {exc}") from None
    return specs


_SKELETONS_HELP = ("Add each candidate's finite skeleton (its discrete generators and the half-turns of its Lie "
                   "generators, e.g. Skeleton(O(3)) = the axis flips) as an extra candidate of the soft models "
                   "(default: on for soft, off for per).")


def _candidate_opts(candidates, model_name: Optional[str] = None, skeletons: Optional[bool] = None,
                    strict: bool = True) -> Dict:
    """build_model options for --candidates / --skeletons. With strict=False (compare: several models) the
    skeleton switch reaches only the soft models, whatever else is listed."""
    from ..models import parse_model_name

    opts: Dict = {"candidates": list(candidates)} if candidates else {}
    if skeletons is not None and (strict or parse_model_name(model_name)[0] in ("per", "soft")):
        opts["skeletons"] = bool(skeletons)
    return opts


def _print_fit(m: Dict) -> None:
    from rich.table import Table

    table = Table(title=f"{m['model']} on {m['task']} (seed {m['seed']})", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("parameters", f"{m['n_parameters']:,}"),
        ("epochs / steps", f"{m['epochs']} / {m['steps']}"),
        ("best epoch (validation)", _fmt(m.get("best_epoch"))),
        ("train MSE", f"{m['train_mse']:.4e}"),
        ("val MSE", f"{m['val_mse']:.4e}"),
        ("test MSE", f"{m['test_mse']:.4e}"),
    ]
    for g, e in m.get("equivariance", {}).items():
        rows.append((f"equivariance error {g}", f"{e['mean']:.3e} (max {e['max']:.2e})"))
    for g, s in (m.get("strengths") or {}).items():
        rows.append((f"strength {g}", f"{s:.4g}"))
    rows += [("build time", f"{m['build_seconds']:.2f} s"), ("step time", f"{m['step_seconds'] * 1e3:.2f} ms"),
             ("train time", f"{m['train_seconds']:.1f} s")]
    if m.get("tuner"):
        rows.append((f"tuner ({m['tuner']}) overhead", f"{m['tuner_overhead_seconds']:.2f} s "
                                                       f"({100 * m['tuner_overhead_fraction']:.1f}% of training)"))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    console.print(f"test_mse={m['test_mse']:.6e}", highlight=False)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _split_top_level(text: str) -> List[str]:
    """Split on commas outside brackets: "mlp,emlp:SO+(1,3),emlp:O(3)@[1,2,3]:4" has three models."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _group_key(spec: str) -> str:
    """Canonical identity of a group spec (its generators' hash), or the spec itself when it does not parse (the
    model check that follows reports that)."""
    from ..errors import SoftsymError
    from ..groups.parse import parse_group

    try:
        return parse_group(spec).key
    except SoftsymError:
        return spec


def _keep_previous_comparison(json_path: Path, png_path: Path, prev: Dict) -> None:
    """Move compare.json / compare.png of another comparison to compare-previous.* (replacing older ones) and say
    so: a smaller comparison into the same --out must not silently lose a larger one."""
    old_json = json_path.with_name("compare-previous.json")
    old_png = png_path.with_name("compare-previous.png")
    json_path.replace(old_json)
    if png_path.exists():
        png_path.replace(old_png)
    elif old_png.exists():  # an older comparison's plot would no longer match compare-previous.json
        old_png.unlink()
    models = ",".join(map(str, prev.get("models") or []))
    console.print(f"kept the previous comparison (models {models}, {prev.get('seeds')} seed(s)) as {old_json.name}"
                  f"{' / ' + old_png.name if old_png.exists() else ''}", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command()
    def fit(
        task: Optional[str] = typer.Option(None, "--task", help=_TASK_HELP),
        data: Optional[Path] = typer.Option(None, "--data", help=_DATA_HELP),
        group: Optional[str] = typer.Option(None, "--group", help="With --data: the group, e.g. 'O(3)'."),
        rep_in: Optional[str] = typer.Option(None, "--rep-in", help="With --data: the inputs' rep, e.g. '5V0+5V'."),
        rep_out: Optional[str] = typer.Option(None, "--rep-out", help="With --data: the targets' rep, e.g. 'V**2'."),
        model: str = typer.Option("emlp", "--model", help=_MODEL_HELP),
        n_train: Optional[int] = typer.Option(None, "--n-train", help="Training samples (default: 1000 for a "
                                                                      "task; the rest of --data after val/test)."),
        n_val: Optional[int] = typer.Option(None, "--n-val", help="Validation samples (protocol default)."),
        n_test: Optional[int] = typer.Option(None, "--n-test", help="Test samples (protocol default)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the data, the initialisation and the batch order."),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs (protocol default: EMLP min(900000/N, "
                                                                     "1000); MixedInertia 8000)."),
        ch: Optional[int] = typer.Option(None, "--ch", help="Hidden channels (384 EMLP tasks; 128, RPP 89 on "
                                                           "MixedInertia)."),
        num_layers: int = typer.Option(3, "--num-layers", help="Hidden layers (0: a single linear layer)."),
        lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (3e-3 EMLP / 1e-3 PER)."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Minibatch size (500)."),
        weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="L2 weight decay."),
        schedule: Optional[str] = typer.Option(None, "--schedule", help="Learning-rate schedule: constant "
                                                                       "(EMLP tasks) or cosine (MixedInertia)."),
        candidates: Optional[str] = typer.Option(None, "--candidates", help=_CANDIDATES_HELP),
        skeletons: Optional[bool] = typer.Option(None, "--skeletons/--no-skeletons", help=_SKELETONS_HELP),
        tuner: Optional[str] = typer.Option(None, "--tuner", help="Strength tuner: per, soft, none (default: the "
                                                                  "model's)."),
        run_dir: Optional[Path] = typer.Option(None, "--run-dir", "--out", help="Run directory (config, metrics, checkpoints); --out is the same."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir from its last checkpoint."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run in --run-dir."),
        progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: "
                                                                                       "on a terminal)."),
        json_out: bool = typer.Option(False, "--json", help="Print the final metrics as JSON."),
        nproc: int = typer.Option(1, "--nproc", help="Local processes sharing every minibatch (data parallelism, "
                                                     "gloo); the result equals --nproc 1 up to round-off."),
    ):
        """Train one model on a synthetic task or your data and print its final metrics (float64 test MSE,
        equivariance)."""
        cand_list = _parse_candidates(candidates)
        source = TaskSource(task, data, group, rep_in, rep_out, cand_list)
        if resume and run_dir is not None and not (run_dir / "last.pt").exists():
            err_console.print(f"[yellow]note:[/] {run_dir} holds no checkpoint to resume: starting a new run there",
                              highlight=False)
        try:
            result = _run_one(source, model, seed=seed, n_train=n_train, n_val=n_val, n_test=n_test, epochs=epochs,
                              ch=ch, num_layers=num_layers, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                              schedule=schedule, tuner=tuner, run_dir=str(run_dir) if run_dir else None,
                              resume=resume, overwrite=overwrite, progress=progress, candidates=cand_list,
                              skeletons=skeletons, nproc=nproc)
        except KeyboardInterrupt as exc:
            if json_out:  # a script reading stdout still gets one JSON object saying where the run stopped
                console.print_json(dumps_strict(_interrupted_summary(run_dir, exc)))
            raise
        m = {k: v for k, v in result.metrics.items() if k != "history"}
        if json_out:
            console.print_json(dumps_strict(m))
        else:
            _print_fit(m)
            if result.run_dir:
                console.print(f"run directory: {result.run_dir}", highlight=False)

    @app.command()
    def compare(
        task: Optional[str] = typer.Option(None, "--task", help=_TASK_HELP),
        data: Optional[Path] = typer.Option(None, "--data", help=_DATA_HELP),
        group: Optional[str] = typer.Option(None, "--group", help="With --data: the group, e.g. 'O(3)'."),
        rep_in: Optional[str] = typer.Option(None, "--rep-in", help="With --data: the inputs' rep."),
        rep_out: Optional[str] = typer.Option(None, "--rep-out", help="With --data: the targets' rep."),
        models: str = typer.Option("mlp,emlp,rpp,per,soft", "--models", help="Comma-separated models. " + _MODEL_HELP),
        seeds: int = typer.Option(3, "--seeds", help="Number of seeds (0 .. n-1): data (or the split of --data), "
                                                      "initialisation, batches."),
        n_train: Optional[int] = typer.Option(None, "--n-train", help="Training samples (default: 1000 for a "
                                                                      "task; the rest of --data)."),
        candidates: Optional[str] = typer.Option(None, "--candidates", help=_CANDIDATES_HELP),
        skeletons: Optional[bool] = typer.Option(None, "--skeletons/--no-skeletons", help=_SKELETONS_HELP),
        n_val: Optional[int] = typer.Option(None, "--n-val"),
        n_test: Optional[int] = typer.Option(None, "--n-test"),
        epochs: Optional[int] = typer.Option(None, "--epochs"),
        ch: Optional[int] = typer.Option(None, "--ch"),
        num_layers: int = typer.Option(3, "--num-layers"),
        lr: Optional[float] = typer.Option(None, "--lr"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size"),
        weight_decay: Optional[float] = typer.Option(None, "--weight-decay"),
        schedule: Optional[str] = typer.Option(None, "--schedule", help="constant (EMLP tasks) or cosine "
                                                                       "(MixedInertia)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default softsym-compare/<task>): "
                                                               "compare.json, compare.png, runs/ (finished runs "
                                                               "are reused when run again; a comparison of other "
                                                               "models or seeds is kept as compare-previous.*)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Retrain runs whose directory holds another "
                                                                  "config, and replace a compare.json / compare.png "
                                                                  "that softsym compare did not write (default: "
                                                                  "refuse)."),
        progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
        nproc: int = typer.Option(1, "--nproc", help="Local processes sharing every minibatch of each run (data "
                                                     "parallelism, gloo; same results up to round-off)."),
    ):
        """Train several models over seeds; print mean ± std test MSE, equivariance errors, strengths, sizes and
        timings; write JSON and a PNG plot."""
        from rich.table import Table

        from ..errors import ConfigError
        from ..models import _check_reps, build_model, parse_model_name
        from ..report import beats, plot_comparison, summarize
        from ..train import default_config

        cand_list = _parse_candidates(candidates)
        source = TaskSource(task, data, group, rep_in, rep_out, cand_list)
        names = [m.strip() for m in _split_top_level(models) if m.strip()]
        if not names:
            raise ConfigError("--models is empty; give e.g. --models mlp,emlp,soft")
        if seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        # validate the task, the split sizes, every model (built once) and the training options before any training
        probe = source.make(0, n_train, n_val, n_test)
        n_train = len(probe.x_train)
        task = source.label
        labels: Dict[str, str] = {}
        for n in names:
            kind, group = parse_model_name(n)
            label = f"emlp:{_group_key(group)}" if group is not None else kind  # "O(3)" and "o(3)": one model
            if label in labels:
                raise ConfigError(f"--models lists the same model twice ({labels[label]!r} and {n!r}); its runs would be "
                                  "counted twice in the summary, so give every model once")
            labels[label] = n
            if group is not None:
                _check_reps(probe, group, f"model {n!r}")
            build_model(n, probe, ch=ch, num_layers=num_layers, seed=0,  # complex groups, bad ch / num_layers, ...
                        **_candidate_opts(cand_list, n, skeletons, strict=False))
            default_config(probe, n, n_train=n_train, epochs=epochs, lr=lr, batch_size=batch_size,
                           weight_decay=weight_decay, schedule=schedule).validate()
        out_dir = out or Path("softsym-compare") / _slug(task)
        if out_dir.exists() and not out_dir.is_dir():
            raise ConfigError(f"--out {out_dir} exists and is not a directory; choose a directory")
        json_path, png_path = out_dir / "compare.json", out_dir / "compare.png"
        prev = None
        if json_path.exists():
            try:
                prev = json.loads(json_path.read_text())
            except (OSError, UnicodeDecodeError, ValueError):
                prev = None
        ours = isinstance(prev, dict) and {"task", "models", "seeds", "summary", "runs"} <= set(prev)
        if not overwrite:  # a compare.json / compare.png that softsym compare did not write is never replaced silently
            for path in (json_path, png_path):
                if path.exists() and not ours:
                    raise ConfigError(f"{path} exists and was not written by softsym compare; use another --out, or "
                                      "--overwrite to replace it")
        # another comparison (other models or seeds) is kept as compare-previous.*, not replaced silently
        keep_previous = ours and (prev["models"] != names or prev["seeds"] != seeds)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create --out directory {out_dir}: {exc.strerror or exc}") from None
        runs: List[Dict] = []
        t0 = time.perf_counter()
        for name in names:
            for seed in range(seeds):
                run_dir = out_dir / "runs" / f"{_slug(name)}-seed{seed}"
                result = _run_one(source, name, seed=seed, n_train=n_train, n_val=n_val, n_test=n_test, epochs=epochs,
                                  ch=ch, num_layers=num_layers, lr=lr, batch_size=batch_size,
                                  weight_decay=weight_decay, schedule=schedule, tuner=None,
                                  run_dir=str(run_dir), resume=True,
                                  overwrite=False, progress=progress, replace_different=overwrite, reused=True,
                                  candidates=cand_list, skeletons=skeletons, strict_skeletons=False,
                                  nproc=nproc)
                m = result.metrics
                runs.append(m)
                console.print(f"  {name:<14} seed {seed}: test MSE {m['test_mse']:.4e}  "
                              f"({m['train_seconds']:.1f} s)", highlight=False)
        summary = summarize(runs)
        cands = list(dict.fromkeys([c for m in runs for c in list(m.get("equivariance", {}))
                                    + list(m.get("strengths") or {})]))
        table = Table(title=f"{task}: test MSE over {seeds} seed(s), N={n_train}")
        for col, just in (("model", "left"), ("test MSE (mean ± std)", "right"), ("params", "right"),
                          ("build", "right"), ("step", "right"), ("tuner", "right")):
            table.add_column(col, justify=just, no_wrap=True)
        for name, s in summary.items():
            table.add_row(name, f"{s['test_mse_mean']:.4g} ± {s['test_mse_std']:.2g}", f"{s['n_parameters']:,}",
                          f"{s['build_seconds']:.2f} s", f"{s['step_seconds'] * 1e3:.1f} ms",
                          f"{100 * s['tuner_overhead_fraction']:.1f}%" if s["tuner_overhead_fraction"] else "-")
        console.print(table)
        # one row per candidate group, one column per model: soft models can have many candidates (the task's
        # and their skeletons), models are few, so the tables stay readable on an 80-column terminal
        eq = Table(title="equivariance error (scale-adjusted, float64, mean over seeds)")
        eq.add_column("group", overflow="fold")  # on a narrow terminal the names fold, never the numbers
        for name in summary:
            eq.add_column(name, justify="right", no_wrap=True, min_width=8, overflow="fold")
        for c in cands:
            eq.add_row(c, *[f"{s['equivariance'][c]:.2e}" if c in s["equivariance"] else "-"
                            for s in summary.values()])
        console.print(eq)
        soft_models = {n: s for n, s in summary.items() if s["strengths"]}
        if soft_models:
            st = Table(title="final strengths lambda_j (geometric mean over seeds)")
            st.add_column("group", overflow="fold")
            for name in soft_models:
                st.add_column(name, justify="right", no_wrap=True, min_width=7, overflow="fold")
            for c in cands:
                st.add_row(c, *[f"{s['strengths'][c]:.3g}" if c in s["strengths"] else "-"
                                for s in soft_models.values()])
            console.print(st)
        verdicts = {}
        if "soft" in summary and seeds >= 3:
            for other in summary:
                if other != "soft":
                    verdicts[other] = beats(runs, "soft", other)
            console.print("soft beats (lower mean test MSE by more than the std of the per-seed difference): "
                          + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in verdicts.items()), highlight=False)
        payload = {"task": task, "models": names, "seeds": seeds, "n_train": n_train, "summary": summary,
                   "soft_beats": verdicts, "runs": [{k: v for k, v in r.items()} for r in runs],
                   "seconds": time.perf_counter() - t0}
        if keep_previous:
            _keep_previous_comparison(json_path, png_path, prev)
        json_path.write_text(dumps_strict(payload, indent=1))
        png = plot_comparison(summary, runs, png_path, title=f"{task}: test MSE")
        console.print(f"wrote {json_path} and {png}", highlight=False)

    @app.command()
    def report(
        task: Optional[str] = typer.Option(None, "--task", help=_TASK_HELP),
        data: Optional[Path] = typer.Option(None, "--data", help=_DATA_HELP),
        group: Optional[str] = typer.Option(None, "--group", help="With --data: the group, e.g. 'O(3)'."),
        rep_in: Optional[str] = typer.Option(None, "--rep-in", help="With --data: the inputs' rep."),
        rep_out: Optional[str] = typer.Option(None, "--rep-out", help="With --data: the targets' rep."),
        candidates: Optional[str] = typer.Option(None, "--candidates", help="Candidate groups to test, separated "
                                                                            "by ';' (default: the task's, or --group)."),
        skeletons: bool = typer.Option(True, "--skeletons/--no-skeletons", help="Also test each candidate's finite "
                                                                                "skeleton (default: on)."),
        model: str = typer.Option("mlp", "--model", help="Probe model, trained on the train split; an unconstrained "
                                                         "one (mlp) can test every candidate. " + _MODEL_HELP),
        seed: int = typer.Option(0, "--seed", help="Seed of the data (or the split), the probe and the group samples."),
        n_train: Optional[int] = typer.Option(None, "--n-train"),
        n_val: Optional[int] = typer.Option(None, "--n-val"),
        n_test: Optional[int] = typer.Option(None, "--n-test"),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs of the probe and of each exact model "
                                                                     f"(default: the protocol's, at most "
                                                                     f"{REPORT_MAX_EPOCHS})."),
        ch: Optional[int] = typer.Option(None, "--ch"),
        num_layers: int = typer.Option(3, "--num-layers"),
        lr: Optional[float] = typer.Option(None, "--lr"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size"),
        group_samples: int = typer.Option(16, "--group-samples", help="Group elements per candidate."),
        exact: bool = typer.Option(True, "--exact/--no-exact", help="Also train each candidate's exact EMLP and "
                                                                    "compare it with the probe (tests the target "
                                                                    "function itself; one training per candidate)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default softsym-report/<task>): "
                                                               "report.json, report.png, the probe's run."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Retrain a probe or exact model whose run "
                                                                  "directory holds another config, and replace a "
                                                                  "report.json / report.png that softsym report did "
                                                                  "not write (default: refuse)."),
        progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
        json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
        nproc: int = typer.Option(1, "--nproc", help="Local processes sharing every minibatch of the probe's and "
                                                     "the exact models' training (data parallelism, gloo)."),
    ):
        """Symmetry report: which candidate symmetries the data supports, and how strongly (a held-out test with a
        trained probe model; JSON and a PNG)."""
        from rich.table import Table

        from ..errors import ConfigError
        from ..groups.parse import canonical_spec
        from ..groups.skeleton import skeleton_candidates
        from ..errors import SoftsymError
        from ..report import (add_exact_comparison, exact_model_comparison, format_increase, plot_symmetry_report,
                              symmetry_report)

        from ..groups.parse import parse_group
        from ..models import _check_reps, parse_model_name

        cand_list = _parse_candidates(candidates)
        # the tested candidates are not part of the task the probe and the exact models train on: another
        # --candidates list reuses their runs, and a candidate no model can be built for (a complex group) is
        # reported as untestable instead of failing the training
        source = TaskSource(task, data, group, rep_in, rep_out, None)
        probe_task = source.make(seed, n_train, n_val, n_test)
        tested = [canonical_spec(c) for c in (cand_list or probe_task.candidates)]
        for spec in tested:  # a candidate on another space fails now, not after the probe's training
            if parse_group(spec).is_complex:
                continue
            _check_reps(probe_task, spec, f"candidate {spec!r}")
        if skeletons:
            tested += [s for s, _ in skeleton_candidates(tested) if s not in tested]
        probe_kind = parse_model_name(model)[0]
        out_dir = out or Path("softsym-report") / _slug(source.label)
        if out_dir.exists() and not out_dir.is_dir():
            raise ConfigError(f"--out {out_dir} exists and is not a directory; choose a directory")
        json_path, png_path = out_dir / "report.json", out_dir / "report.png"
        if not overwrite:  # a report.json / report.png that softsym report did not write is never replaced silently
            try:
                prev = json.loads(json_path.read_text()) if json_path.exists() else None
            except (OSError, UnicodeDecodeError, ValueError):
                prev = None
            ours = isinstance(prev, dict) and {"candidates", "split", "thresholds", "probe"} <= set(prev)
            for path in (json_path, png_path):
                if path.exists() and not ours:
                    raise ConfigError(f"{path} exists and was not written by softsym report; use another --out, or "
                                      "--overwrite to replace it")
        if epochs is None:  # a report needs a probe that learned the data, not the full benchmark protocol
            from ..train import default_config

            epochs = min(default_config(probe_task, model).epochs, REPORT_MAX_EPOCHS)
        current = [out_dir / f"probe-{_slug(model)}-seed{seed}"]  # the run an interrupt lands in
        try:
            result = _run_one(source, model, seed=seed, n_train=n_train, n_val=n_val, n_test=n_test, epochs=epochs,
                              ch=ch, num_layers=num_layers, lr=lr, batch_size=batch_size, weight_decay=None,
                              tuner=None, run_dir=str(current[0]), resume=True, overwrite=False, progress=progress,
                              replace_different=overwrite, reused=True,
                              candidates=cand_list if probe_kind in ("per", "soft") else None, skeletons=None,
                              nproc=nproc)
            rep = symmetry_report(result.model, probe_task, tested, group_samples=group_samples, seed=seed)
            rep["probe"] = {k: result.metrics.get(k) for k in ("model", "test_mse", "val_mse", "epochs",
                                                               "train_seconds")}
            if exact:  # one exactly equivariant EMLP per candidate, trained like the probe
                exact_models, failed = {}, {}
                for spec in tested:
                    current[0] = out_dir / f"exact-{_slug(spec)}-seed{seed}"
                    try:
                        res = _run_one(source, f"emlp:{spec}", seed=seed, n_train=n_train, n_val=n_val,
                                       n_test=n_test, epochs=epochs, ch=ch, num_layers=num_layers, lr=lr,
                                       batch_size=batch_size, weight_decay=None, tuner=None,
                                       run_dir=str(current[0]), resume=True, overwrite=False, progress=progress,
                                       replace_different=overwrite, nproc=nproc, reused=True)
                        exact_models[spec] = res.model
                    except SoftsymError as exc:  # e.g. a complex group: no real EMLP
                        failed[spec] = str(exc)
                add_exact_comparison(rep, exact_model_comparison(result.model, exact_models, probe_task))
                rep["exact_failed"] = failed
        except KeyboardInterrupt as exc:
            if json_out:  # as fit --json: one JSON object saying where the report stopped
                console.print_json(dumps_strict(_interrupted_summary(
                    current[0], exc, resume="run the same command again: finished runs are reused, the "
                                            "interrupted one resumes")))
            raise
        json_path.write_text(dumps_strict(rep, indent=1))
        png = plot_symmetry_report(rep, png_path)
        if json_out:
            console.print_json(dumps_strict(rep))
            return
        table = Table(title=f"{source.label}: symmetry tests on the {rep['split']} split (n={rep['n_samples']}, probe "
                            f"{rep['model']}, test MSE {rep['base_mse']:.4g})")
        cols = [("candidate", "left"), ("verdict", "left"), ("distribution", "left"), ("loss", "right")]
        cols += [("exact model", "left"), ("MSE ratio", "right")] if exact else [("z", "right")]
        for col, just in cols:
            table.add_column(col, justify=just, no_wrap=col not in ("candidate", "verdict"),
                             overflow="fold" if col == "candidate" else "ellipsis")
        styles = {"holds": "green", "holds (function only)": "green", "uncertain": "yellow", "broken": "red",
                  "untestable": "dim"}

        def styled(v):
            return f"[{styles[v]}]{v}[/]" if v in styles else v

        for r in rep["candidates"]:
            cells = [r["group"], styled(r.get("overall", r["verdict"])), styled(r["verdict"]),
                     format_increase(r["loss_increase"])]
            if exact:
                ex = r.get("exact")
                cells += [styled(ex["verdict"]) if ex else "n/a", f"{ex['loss_ratio']:.3g}" if ex else "-"]
            else:
                cells.append(f"{r['z']:.2f}")
            table.add_row(*cells)
        console.print(table)
        console.print(f"distribution test: is (g x, g y) distributed like (x, y)? holds: p >= "
                      f"{rep['thresholds']['holds_p']:g}, broken: p < {rep['thresholds']['broken_p']:g}; loss increase "
                      "(loss) = how much worse the probe fits the transformed data (z-scores in report.json); "
                      "untestable = the probe is exactly equivariant to that group, the split is too small, or the "
                      "group is complex.", highlight=False)
        if (rep.get("constant_mse") or 0) > 0 and rep["base_mse"] >= rep["constant_mse"]:
            console.print(f"[yellow]warning:[/] the probe's {rep['split']} MSE ({rep['base_mse']:.4g}) is no better "
                          f"than predicting the training mean ({rep['constant_mse']:.4g}): it has not learned the "
                          "target, so the tests have little power and 'holds' says little; train longer (--epochs) "
                          "or on more data (--n-train).", highlight=False)
        for r in rep["candidates"]:
            if r.get("reason") and r["verdict"] == "untestable" and "exactly equivariant" not in r["reason"]:
                console.print(f"  {r['group']} untestable: {r['reason']}", highlight=False)
        if exact:
            th = rep["exact_thresholds"]
            console.print(f"exact model: test MSE of the candidate's exact EMLP over the probe's (holds: ratio <= "
                          f"{th['holds_ratio']:g} or not significantly worse; broken: p < {th['broken_p']:g}, ratio > "
                          f"{th['broken_ratio']:g} and a gap above {100 * th['broken_gap']:g} % of the target's "
                          "variance; broken against a passed distribution test: uncertain). 'holds (function only)': the "
                          "target function is equivariant but the inputs are not symmetrically distributed.",
                          highlight=False)
            for spec, why in rep.get("exact_failed", {}).items():
                console.print(f"  no exact model for {spec}: {why}", highlight=False)
            reasons = dict.fromkeys(r["exact"]["reason"] for r in rep["candidates"]
                                    if r.get("exact") and r["exact"].get("reason"))
            for why in reasons:
                console.print(f"  [yellow]exact-model comparison uncertain:[/] {why}", highlight=False)
        console.print(f"wrote {json_path} and {png}", highlight=False)
