"""Shared CLI helpers: error reporting and consoles."""
from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape

from ..errors import SoftsymError

#: width of tables written to a pipe or file when COLUMNS is not set (rich would use 80 and elide numbers)
PIPE_WIDTH = 160


def _console(stderr: bool = False) -> Console:
    """A console; piped or captured output gets PIPE_WIDTH columns so wide tables keep their numbers."""
    c = Console(stderr=stderr)
    if not c.is_terminal and not os.environ.get("COLUMNS"):
        c = Console(stderr=stderr, width=PIPE_WIDTH)
    return c


console = _console()
err_console = _console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print an error in red on stderr and exit with ``code`` (no traceback). The message is printed verbatim:
    brackets in it (shapes, lists, "[/]" from a model's exception) are not rich markup."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise SystemExit(code)


def _cli_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings in the CLI as one line each ("warning: ..."), not Python's file:line plus source line."""
    return f"warning: {message}\n"


def run_app(app, argv=None) -> None:
    """Run a typer app, turning SoftsymError into a clean message and exit status 2, and an interrupt into 130
    (Ctrl-C) or 143 (SIGTERM)."""
    import warnings

    warnings.formatwarning = _cli_warning
    try:
        app(args=argv, standalone_mode=True)
    except SoftsymError as exc:
        fail(str(exc))
    except MemoryError as exc:
        fail(f"out of memory ({str(exc).splitlines()[0] if str(exc) else 'MemoryError'}); use fewer samples "
             "(--n-train, --n-samples), fewer channels (--ch) or a smaller batch")
    except RuntimeError as exc:
        text = str(exc)
        if "allocate memory" not in text and "DefaultCPUAllocator" not in text and "out of memory" not in text:
            raise
        fail(f"out of memory ({text.splitlines()[0][:200]}); use fewer samples (--n-train, --n-samples), fewer "
             "channels (--ch) or a smaller batch")
    except KeyboardInterrupt as exc:
        err_console.print(f"[yellow]interrupted[/]{': ' + str(exc) if str(exc) else ''}", highlight=False)
        raise SystemExit(_interrupt_status()) from None
    except SystemExit as exc:  # typer turns a KeyboardInterrupt into exit status 130 itself
        if exc.code == 130:
            raise SystemExit(_interrupt_status()) from None
        raise


def _interrupt_status() -> int:
    """143 when SIGTERM stopped the run, 130 after Ctrl-C (as shells report them)."""
    import sys

    parallel = sys.modules.get("softsym.parallel")  # loaded by any run a signal can stop
    return parallel.stop_exit_status() if parallel is not None else 130


def finite_json(obj):
    """obj with every non-finite float replaced by its string ("inf", "-inf", "nan") and numpy scalars by Python
    numbers, so that the JSON written is strict (jq, JavaScript and json.loads(parse_constant=...) accept it)."""
    import math

    if isinstance(obj, dict):
        return {str(k): finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "shape", None) == ():  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def dumps_strict(obj, **kwargs) -> str:
    """json.dumps of :func:`finite_json` (obj), refusing NaN / Infinity tokens."""
    import json

    return json.dumps(finite_json(obj), allow_nan=False, default=str, **kwargs)
