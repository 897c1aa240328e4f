"""`softsym check`: equivariance and Lie-derivative errors of any model, per group and per generator."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import console, dumps_strict, fail

_STYLE = {"exact": "bold green", "approximate": "bold yellow", "not equivariant": "bold red"}


def _fmt(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:.1e}"


def print_report(report) -> None:
    """Render a CheckReport as rich tables (summary per group, then errors per Lie generator)."""
    from rich.table import Table

    console.print(
        f"[bold]softsym check[/] {report.model}  dtype {report.dtype}  inputs: {report.inputs} "
        f"({report.n_inputs} rows)"
    )
    console.print(
        f"verdicts: [green]exact[/] if max error <= {report.exact_tol:.1e}, "
        f"[yellow]approximate[/] if mean error <= {report.approx_tol:.3g}, else [red]not equivariant[/]. "
        "Errors are EMLP's scale-adjusted relative error rms(f(gx) - g f(x)) / (rms f(gx) + rms g f(x) + "
        "mean|g - I| s) with s = min(1, rms f(x)) (s = 1 is EMLP's; the cap keeps small outputs from hiding "
        "errors); "
        "'plain' is ||f(gx) - g f(x)|| / ||f(x)||; Lie errors are ||L_A f|| / (||f(x)|| ||A||)."
    )
    table = Table(title="equivariance per group")
    table.add_column("group", justify="left", overflow="fold", min_width=10)
    table.add_column("n", justify="right")
    for col in ("mean", "max", "plain max", "Lie max"):
        table.add_column(col, justify="right", no_wrap=True, min_width=7)
    table.add_column("verdict", justify="left", no_wrap=True, min_width=15)
    for r in report.results:
        eq, lie = r.equivariance, r.lie
        table.add_row(
            r.group, str(eq.n_samples), _fmt(eq.capped_mean), _fmt(eq.capped_max), _fmt(eq.plain_max),
            _fmt(lie.max if lie else None), f"[{_STYLE[r.verdict]}]{r.verdict}[/]",
        )
    console.print(table)
    for r in report.results:
        console.print(f"  {r.group}: {r.rep_in} -> {r.rep_out}; elements: {r.equivariance.sampler}; "
                      f"plain mean {_fmt(r.equivariance.plain_mean)}"
                      + (f"; Lie mean {_fmt(r.lie.mean)}" if r.lie else ""), highlight=False)
        if r.note:
            console.print(f"  [bold]note[/] ({r.group}): {r.note}", highlight=False)
    rows = [(r, g) for r in report.results if r.lie is not None for g in r.lie.per_generator]
    if rows:
        gt = Table(title="Lie derivative per generator")
        for col, just in (("group", "left"), ("generator", "right"), ("||A||", "right"), ("error", "right"),
                          ("plain", "right"), ("method", "left")):
            gt.add_column(col, justify=just)
        for r, g in rows:
            gt.add_row(r.group, f"A{g['index']}", f"{g['norm']:.3g}", _fmt(g["error"]), _fmt(g["plain"]), r.lie.method)
        console.print(gt)
    skipped = [r.group for r in report.results if r.lie is None]
    if skipped:
        console.print(f"no Lie algebra (finite groups): {', '.join(skipped)}" if report.lie else
                      f"Lie derivatives skipped (--no-lie): {', '.join(skipped)}", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command()
    def check(
        model: str = typer.Argument(..., help="Factory returning the model: 'pkg.module:make_model' or "
                                              "'path/to/file.py:make_model'."),
        group: List[str] = typer.Option(..., "--group", "-g",
                                        help='Candidate group, repeatable: -g "O(3)" -g "SO(3)" (or -g "O(3);SO(3)").'),
        rep_in: str = typer.Option(..., "--rep-in", help='Input rep, e.g. "5V0+5V".'),
        rep_out: str = typer.Option(..., "--rep-out", help='Output rep, e.g. "V**2".'),
        n_inputs: int = typer.Option(64, "--n-inputs", help="Number of N(0,1) float64 inputs."),
        seed: int = typer.Option(0, "--seed", help="Seed of the inputs and group samples."),
        inputs: Optional[Path] = typer.Option(None, "--inputs", help="NPZ file with the inputs under key 'x'."),
        n_samples: int = typer.Option(32, "--n-samples", help="Sampled group elements (small finite groups: all)."),
        exact_tol: Optional[float] = typer.Option(None, "--exact-tol",
                                                  help="'exact' threshold on the max error (default 1e-9 float64, "
                                                       "1e-5 float32)."),
        approx_tol: float = typer.Option(0.1, "--approx-tol", help="'approximate' threshold on the mean error."),
        spread: Optional[float] = typer.Option(None, "--spread",
                                               help="Spread of the sampler of non-compact groups (SO(1,3), SL(3), "
                                                    "...; default softsym.defaults.SAMPLE_SPREAD)."),
        no_lie: bool = typer.Option(False, "--no-lie", help="Skip the Lie-derivative errors."),
        json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON to this path ('-': print it on stdout instead of the tables)."),
    ):
        """Check whether a model is equivariant: errors per group and per Lie generator, with a verdict.

        An nn.Module is measured in eval mode (dropout off, BatchNorm on its running statistics).

        The exit status is 0 whatever the verdict (2 on bad input); read the verdict from --json.
        """
        from ..check import check as run_check
        from ..errors import SoftsymError

        group = [g.strip() for spec in group for g in spec.split(";") if g.strip()]  # -g "O(3);SO(3)" as --candidates
        try:
            report = run_check(model, group, rep_in, rep_out, n_inputs=n_inputs, seed=seed, inputs=inputs,
                               n_samples=n_samples, exact_tol=exact_tol, approx_tol=approx_tol, lie=not no_lie,
                               spread=spread)
        except SoftsymError as exc:
            fail(str(exc))
            return
        if json_path is not None and str(json_path) == "-":  # --json -: the report as JSON on stdout, nothing else
            console.print_json(dumps_strict(report.to_dict()))
            return
        print_report(report)
        if json_path is not None:
            try:
                json_path.parent.mkdir(parents=True, exist_ok=True)
                json_path.write_text(dumps_strict(report.to_dict(), indent=2))
            except OSError as exc:
                fail(f"cannot write the report to {str(json_path)!r}: {exc}")
            console.print(f"report written to {json_path}")
