"""Shared CLI helpers: error reporting and consoles."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

from ..errors import SoftsymError

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print an error in red on stderr and exit with ``code`` (no traceback). The message is printed verbatim:
    brackets in it (shapes, lists, "[/]" from a model's exception) are not rich markup."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise SystemExit(code)


def run_app(app, argv=None) -> None:
    """Run a typer app, turning SoftsymError into a clean message and exit status 2."""
    try:
        app(args=argv, standalone_mode=True)
    except SoftsymError as exc:
        fail(str(exc))
    except KeyboardInterrupt as exc:
        err_console.print(f"[yellow]interrupted[/]{': ' + str(exc) if str(exc) else ''}", highlight=False)
        raise SystemExit(130)
