"""CLI commands about groups and bases: demo, solve, cache, bench solve."""
from __future__ import annotations

import time
from typing import Optional

import typer

from ._common import console, dumps_strict, fail

DEMO_CASES = [
    ("SO(3)", "V**2", "V**2"),
    ("O(3)", "5V0+5V", "V**2"),
    ("O(2)@z", "V**2", "V**2"),
    ("O(3)", "V**3", "V**3"),
    ("O(1,3)", "V**3", "V**3"),
    ("SO(1,3)", "V**3", "V**3"),
    ("O(5)", "V**3", "V**3"),
    ("O(3)", "V**4", "V**4"),
    ("S(6)", "100V0+100V+20V**2", "100V0+100V+20V**2"),
]


def _solve_table(cases, cache: bool, title: str):
    from rich.table import Table

    import softsym

    table = Table(title=title)
    for col, just in (("group", "left"), ("rep in", "left"), ("rep out", "left"), ("map dim", "right"),
                      ("basis dim", "right"), ("paths", "left"), ("time", "right")):
        table.add_column(col, justify=just, overflow="fold")
    rows = []
    for g_spec, rin, rout in cases:
        group = softsym.group(g_spec)
        hom = softsym.Hom(softsym.rep(rin, group), softsym.rep(rout, group))
        t0 = time.perf_counter()
        basis = softsym.equivariant_basis(hom, cache=cache)
        dt = time.perf_counter() - t0
        paths = ",".join(sorted({b["path"] for b in basis.blocks}))
        table.add_row(group.name, rin, rout, f"{hom.size:,}", f"{basis.dim:,}", paths, f"{dt * 1e3:.1f} ms")
        rows.append({"group": group.name, "rep_in": rin, "rep_out": rout, "map_dim": hom.size,
                     "basis_dim": basis.dim, "seconds": dt})
    return table, rows


def register(app: typer.Typer) -> None:
    cache_app = typer.Typer(help="Inspect or clear the on-disk basis cache.", no_args_is_help=True)
    bench_app = typer.Typer(help="Benchmarks (tables on screen, JSON in benchmarks/results/).", no_args_is_help=True)
    app.add_typer(cache_app, name="cache")
    app.add_typer(bench_app, name="bench")

    @app.command()
    def demo(no_cache: bool = typer.Option(False, "--no-cache", help="Solve from scratch, ignoring the cache.")):
        """Solve and print a few equivariant bases with their dimensions and timings."""
        console.print("[bold]softsym demo[/]: equivariant linear maps rep_in -> rep_out, solved in float64")
        from ..reps import basis as basis_module

        t0, solved0, cached0 = time.perf_counter(), basis_module.blocks_solved, basis_module.blocks_cached
        table, _ = _solve_table(DEMO_CASES, cache=not no_cache, title="Equivariant bases (Hom(rep_in, rep_out))")
        console.print(table)
        n_solved = basis_module.blocks_solved - solved0
        n_cached = basis_module.blocks_cached - cached0
        if no_cache:
            how = "solved from scratch (cache ignored)"
        elif n_solved and not n_cached:
            how = "solved from scratch: run again to see cached (warm) timings"
        elif n_solved:
            how = (f"{n_solved} tensor block{'s' if n_solved != 1 else ''} solved, {n_cached} read from the cache: "
                   "run again to see cached (warm) timings")
        else:
            how = "every block came from the on-disk cache (--no-cache solves from scratch)"
        console.print(f"total {time.perf_counter() - t0:.2f} s; {how}.")

    @app.command()
    def solve(
        group: str = typer.Argument(..., help='Group spec, e.g. "O(3)", "SO(1,3)", "O(2)@z", "S(5)".'),
        rep_in: str = typer.Argument(..., help='Input rep, e.g. "5V0+5V".'),
        rep_out: Optional[str] = typer.Argument(None, help="Output rep; omit to solve invariants of rep_in."),
        tol: Optional[float] = typer.Option(None, help="Relative singular-value threshold."),
        no_cache: bool = typer.Option(False, "--no-cache"),
        json_out: bool = typer.Option(False, "--json", help="Print the spectrum as JSON."),
    ):
        """Solve one basis: Hom(rep_in, rep_out), or the invariants of rep_in, and show its spectrum."""
        from rich.table import Table

        import softsym

        g = softsym.group(group)
        r = softsym.rep(rep_in, g)
        target = softsym.Hom(r, softsym.rep(rep_out, g)) if rep_out is not None else r
        t0 = time.perf_counter()
        basis = softsym.equivariant_basis(target, tol=tol, cache=not no_cache)
        dt = time.perf_counter() - t0
        if json_out:
            # strict JSON: a non-finite number (gap = inf for a clear-cut block) is written as the string "inf"
            console.print_json(dumps_strict({"group": g.name, "rep": repr(target), "rep_in": rep_in,
                                             "rep_out": rep_out, "dim": basis.dim, "size": basis.size, "seconds": dt,
                                             "blocks": basis.blocks, "spectrum": basis.spectrum}))
            return
        console.print(f"{g.name}: {target!r}  size {basis.size:,}  basis dim [bold]{basis.dim:,}[/]  ({dt * 1e3:.1f} ms)")
        table = Table(title="distinct blocks")
        for col in ("block", "dim", "path", "smallest sigma (rel.)", "gap", "residual"):
            table.add_column(col)
        for name, spec in basis.spectrum.items():
            sv = ", ".join(f"{x:.1e}" for x in spec["smallest_singular_values"][:4]) or "-"
            table.add_row(name, str(spec["dim"]), spec["path"], sv, f"{spec['gap']:.2e}", f"{spec['residual']:.1e}")
        console.print(table)

    @cache_app.command("info")
    def cache_info():
        """Where the cache lives and how big it is."""
        from ..reps import cache

        i = cache.info()
        console.print(f"path     {i['path']}\nentries  {i['entries']}\nsize     {i['bytes'] / 1e6:.2f} MB\n"
                      f"format   v{i['format_version']}  (override the location with SOFTSYM_CACHE)")

    @cache_app.command("clear")
    def cache_clear(yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")):
        """Delete every cached basis."""
        from ..reps import cache

        i = cache.info()
        if i["entries"] and not yes:
            try:
                ok = typer.confirm(f"delete {i['entries']} cached bases in {i['path']}?", default=False)
            except typer.Abort:  # no answer (stdin closed, Ctrl-C / Ctrl-D)
                fail("no answer to the confirmation: nothing removed (pass --yes to clear without asking)", code=1)
            if not ok:
                console.print("nothing removed")
                return
        n = cache.clear()
        console.print(f"removed {n} entries from {i['path']}")

    @bench_app.command("solve")
    def bench_solve(
        emlp: Optional[str] = typer.Option(None, "--emlp", help="Python of a separate venv with EMLP installed."),
        cases: Optional[str] = typer.Option(None, help="Comma-separated case names to run (default all)."),
        dense_cap: float = typer.Option(30.0, help="Skip the dense baseline when its estimated time exceeds this (s)."),
        out: Optional[str] = typer.Option(None, help="JSON output path (default benchmarks/results/basis_solve-<time>.json)."),
    ):
        """Cold/warm solve times vs the dense baseline (and EMLP with --emlp)."""
        from ..bench.solve import run

        run(emlp_python=emlp, only=cases.split(",") if cases else None, dense_cap=dense_cap, out=out)
