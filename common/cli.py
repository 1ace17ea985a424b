"""Run an app's typer command line with one-line errors for the user's mistakes.

A bad dataset, a missing download, no registered champion or a tampered model is the user's to fix, not a bug:
it is printed as ``error: <message>`` with exit code 2 instead of a traceback. Anything else still raises.
"""

from __future__ import annotations

import sys

import typer


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types that mean "fix your input/setup" (registry ones only once it is imported)."""
    from common.data import DataError, DownloadError

    types: list[type[BaseException]] = [DataError, DownloadError]
    registry = sys.modules.get("common.registry")  # importing it here would pull in MLflow for --help
    if registry is not None:
        types += [registry.IntegrityError, registry.NotFoundError]
    return tuple(types)


def run(app: typer.Typer) -> None:
    """``app()``, turning user errors into ``error: ...`` on stderr and exit code 2."""
    try:
        app()
    except Exception as exc:
        if isinstance(exc, user_error_types()):
            typer.echo(f"error: {exc}", err=True)
            sys.exit(2)
        raise
