"""One command-line contract for every app: ``python -m apps.<app> <command> [options]``.

An app builds its command line with :func:`create_app` and registers its functions as commands using the option
names below; :func:`run` is its ``main``. ``tests/common/test_cli_contract.py`` checks every app against this page.

Commands, each with the standard options named after it:

- ``demo`` (``--seed``): the whole lifecycle on the embedded data, offline, in a home of its own
  (``$MLREF_HOME/demo/<app>``), never in the user's registry.
- ``train`` (``--dataset --config --seed --tune --promote/--no-promote``): train, evaluate on held-out data,
  register a version; it becomes champion only when asked or when there is none, and the last line says which
  version is served and how to promote the new one.
- ``evaluate`` (``--dataset --config --seed``): models vs baselines on the app's protocol -> metrics + report.
- ``serve`` (``--host --port``): the champion over HTTP on 127.0.0.1; hot-swaps when the champion moves.
- ``predict`` (``--ref``): one input from the command line.
- ``batch`` (``--input --output --ref --chunksize``): a file in, a file out, chunked, written atomically.
- ``monitor`` (``--dataset --ref``): recent data vs the model's training reference; exit 1 on an alert.
- ``retrain`` (``--dataset --margin``): a challenger on newer data, promoted only if it wins fairly.
- ``bench`` (``--dataset --output``): the benchmark -> ``bench/results/<app>.json`` for the reference dataset,
  ``bench/results/<app>-<dataset>.json`` for any other.
- ``models list|show VERSION|promote VERSION|rollback``: added by :func:`create_app` (``common/models.py``).

Exit codes (:data:`EXIT_OK` ...): 0 success, 1 a monitor alert, 2 the user's mistake (bad input, no champion, a
damaged registry or a tampered model: one line ``error: ...`` on stderr), 3 a bug (the traceback is printed). A
crash therefore never looks like an alert.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

EXIT_OK, EXIT_ALERT, EXIT_USER_ERROR, EXIT_BUG = 0, 1, 2, 3
STANDARD_COMMANDS = ("demo", "train", "evaluate", "serve", "predict", "batch", "monitor", "retrain", "bench", "models")
NOISY_LOGGERS = ("mlflow", "alembic", "urllib3", "httpx", "git", "numba", "matplotlib", "distributed")

# The standard options. typer.Option objects are plain defaults, so one object can serve many commands.
CONFIG = typer.Option(None, "--config", help="JSON file with the app's config fields (flags override it)")
SEED = typer.Option(None, "--seed", help="seed for every random thing (default: MLREF_SEED, 42)")
TUNE = typer.Option(0, "--tune", min=0, help="Optuna trials on validation data (0: the config's parameters)")
PROMOTE = typer.Option(
    None, "--promote/--no-promote", help="make the new version champion (default: only when there is no champion yet)"
)
REF = typer.Option("champion", "--ref", help="registry alias (champion, challenger) or version number")
OUTPUT_FILE = typer.Option(..., "--output", "-o", help="output file (.parquet or .csv); written atomically")
CHUNKSIZE = typer.Option(100_000, "--chunksize", min=1, help="rows per chunk")
MARGIN = typer.Option(0.0, "--margin", help="how much the challenger must beat the champion by (metric units)")
HOST = typer.Option(None, "--host", help="bind address (default MLREF_HOST, 127.0.0.1)")
PORT = typer.Option(None, "--port", help="port (default MLREF_PORT, 8000)")
VERBOSE = typer.Option(False, "--verbose", "-v", help="debug logging")


def setup_logging(verbose: bool = False) -> None:
    """INFO (or DEBUG) to stderr with timestamps; third-party chatter at WARNING."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)  # basicConfig is a no-op when a handler exists (e.g. under pytest)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def echo_json(obj: Any) -> None:
    """Print a command's result as indented JSON on stdout (what scripts and tests parse)."""
    typer.echo(json.dumps(obj, indent=2, default=str))


def create_app(name: str, registry_name: str, doc: str | None) -> typer.Typer:
    """The app's typer CLI with logging set up, ``--verbose``, and the shared ``models`` commands."""
    from common.models import models_cli

    app = typer.Typer(help=doc, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def _main(verbose: bool = VERBOSE) -> None:
        setup_logging(verbose)

    app.add_typer(models_cli(name, registry_name), name="models")
    return app


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types that mean "fix your input/setup": :class:`common.errors.UserError` and its subclasses
    (``DataError``, ``ConfigError``, ``DownloadError``, the registry's and tracking store's errors)."""
    from common.errors import UserError

    return (UserError,)


def run(app: typer.Typer) -> None:
    """``app()`` with the contract's exit codes: user errors -> ``error: ...`` and 2, bugs -> traceback and 3."""
    try:
        app(standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place that maps every failure to an exit code
        if isinstance(exc, user_error_types()):
            typer.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USER_ERROR)
        traceback.print_exc()
        typer.echo(f"internal error (a bug, please report it): {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_BUG)


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` and return the exit (code 2) to raise: ``raise cli.fail("...")``."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USER_ERROR)


def exit_monitor(alerts: bool) -> None:
    """End ``monitor``: exit 1 when an alert was raised, 0 otherwise."""
    raise typer.Exit(EXIT_ALERT if alerts else EXIT_OK)


@contextmanager
def demo_home(app: str) -> Iterator[Path]:
    """Run a demo in ``$MLREF_HOME/demo/<app>`` (emptied first), never in the user's registry.

    The user's own runs, registry and reports under ``$MLREF_HOME`` stay as they are, whatever the demo promotes.
    A tracking server set through ``MLREF_TRACKING_URI`` is not used by a demo either: it gets a local sqlite store.
    """
    from common.config import get_settings, override

    home = get_settings().home.expanduser() / "demo" / app
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    with override(home=home, tracking_uri=None):
        yield home


def train_summary(registry_name: str, app: str, version: str) -> str:
    """The last line of ``train``: which version is served now and how to serve the new one."""
    from common import registry

    champion = registry.version_of(registry_name, registry.CHAMPION)
    if champion == str(version):
        return f"{app}: version {version} is now the champion (served by `python -m apps.{app} serve`)."
    return (
        f"{app}: registered version {version} as challenger; version {champion} is still the champion and "
        f"is what `serve`/`predict` use. To serve the new one: python -m apps.{app} models promote {version}"
    )


def choose_alias(registry_name: str, promote: bool | None) -> str:
    """``champion`` when asked (or when there is none yet), else ``challenger``."""
    from common import registry

    if promote or (promote is None and registry.version_of(registry_name, registry.CHAMPION) is None):
        return registry.CHAMPION
    return registry.CHALLENGER


def slug(text: str) -> str:
    """A file-name-safe form of a dataset name or path (``~/data/My Shop.csv`` -> ``my-shop``)."""
    stem = Path(str(text)).stem if ("/" in str(text) or "." in str(text)) else str(text)
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "dataset"


def bench_output(app: str, dataset: str | None, reference: str | None, output: Path | None = None) -> Path:
    """Where ``bench`` writes: ``output`` if given, the reference ``bench/results/<app>.json`` for the reference
    dataset (``dataset`` None or equal to ``reference``), else ``bench/results/<app>-<slug(dataset)>.json``."""
    if output is not None:
        return Path(output)
    if dataset is None or dataset == reference:
        return Path("bench/results") / f"{app}.json"
    return Path("bench/results") / f"{app}-{slug(dataset)}.json"
