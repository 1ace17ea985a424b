"""Model management, the same in every app: ``python -m apps.<app> models list|show|promote|rollback``.

- ``list``: every registered version with its aliases, dataset, data fingerprint, key metrics and creation time.
- ``show VERSION``: the version's card: metrics, parameters, tags, and the model card saved in its directory.
- ``promote VERSION``: make it the champion (a running ``serve`` hot-swaps to it on its next registry poll).
- ``rollback``: the previous champion back.

Every change of champion, by ``train --promote``, ``retrain`` or these commands, goes through
:func:`common.registry.set_alias`, which keeps the champion history that ``rollback`` walks back.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import typer

from common import registry, tracking

KEY_METRICS = 4  # metrics shown per version in ``list``


def describe(mv: registry.ModelVersion) -> dict[str, Any]:
    """The ``list`` row of one version (JSON-ready); ``created`` is its registration time (UTC, ISO 8601)."""
    metrics = {k: round(v, 4) for k, v in sorted(mv.metrics.items())}
    created_ms = mv.created_ms
    created = datetime.fromtimestamp(created_ms / 1000, UTC).isoformat(timespec="seconds") if created_ms else None
    return {
        "version": mv.version,
        "aliases": sorted(mv.aliases),
        "dataset": mv.tags.get("dataset"),
        "data_fingerprint": (mv.data_fingerprint or "")[:12] or None,
        "metrics": metrics,
        "created": created,
        "run_id": mv.run_id,
    }


def list_versions(name: str) -> list[dict[str, Any]]:
    """Every version of ``name``, newest first, as :func:`describe` rows."""
    versions = registry.list_versions(name)
    if not versions:
        return []
    c = tracking.client()
    aliases: dict[str, list[str]] = {}
    for alias, version in (c.get_registered_model(name).aliases or {}).items():  # search results lack aliases
        aliases.setdefault(str(version), []).append(alias)
    rows = [describe(replace(mv, aliases=tuple(sorted(aliases.get(mv.version, mv.aliases))))) for mv in versions]
    return sorted(rows, key=lambda r: -int(r["version"]))


def format_rows(rows: list[dict[str, Any]]) -> str:
    """``list`` as an aligned text table."""
    header = ["version", "aliases", "dataset", "fingerprint", "metrics", "created"]
    lines = [header]
    for r in rows:
        metrics = ", ".join(f"{k}={v}" for k, v in list(r["metrics"].items())[:KEY_METRICS])
        lines.append(
            [
                r["version"],
                ",".join(r["aliases"]) or "-",
                r["dataset"] or "-",
                r["data_fingerprint"] or "-",
                metrics or "-",
                r["created"] or "-",
            ]
        )
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines)


def show(name: str, version: str) -> dict[str, Any]:
    """Everything recorded about one version, plus its model card (``model_card.md`` in its directory)."""
    mv = registry.get(name, version)
    card_path = registry.fetch_model_dir(mv) / "model_card.md"
    return {
        **describe(mv),
        "sha256": mv.sha256,
        "metrics": mv.metrics,
        "params": mv.params,
        "tags": mv.tags,
        "model_card": card_path.read_text() if card_path.exists() else None,
    }


def promote(name: str, version: str) -> dict[str, Any]:
    """Make ``version`` the champion; returns the previous and the new champion."""
    mv = registry.get(name, version)  # NotFoundError for a version that does not exist
    registry.fetch_model_dir(mv)  # refuse to promote a tampered artifact (IntegrityError)
    before = registry.version_of(name, registry.CHAMPION)
    if before == mv.version:
        return {"champion": mv.version, "previous": before, "changed": False}
    registry.promote(name, mv.version)
    return {"champion": mv.version, "previous": before, "changed": True}


def rollback(name: str) -> dict[str, Any]:
    """Put the champion before the current one back (the history is kept by the registry)."""
    current = registry.version_of(name, registry.CHAMPION)
    if current is None:
        raise registry.NotFoundError(f"model {name!r} has no champion to roll back")
    previous = registry.previous_champion(name)
    if previous is None:
        raise registry.NotFoundError(f"model {name!r}: champion v{current} has no earlier champion to go back to")
    registry.rollback_champion(name, expected=current, to=previous)
    return {"champion": previous, "previous": current, "changed": True}


def models_cli(app: str, name: str) -> typer.Typer:
    """The ``models`` command group of app ``app`` (registered model ``name``)."""
    cli = typer.Typer(help="Registered versions: list, show, promote, rollback.", no_args_is_help=True)

    @cli.command("list")
    def list_cmd(as_json: bool = typer.Option(False, "--json", help="JSON instead of a table")) -> None:
        """Every version, newest first: aliases, dataset, fingerprint, key metrics, created."""
        rows = list_versions(name)
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        elif not rows:
            typer.echo(f"no versions of {name!r} yet: python -m apps.{app} train")
        else:
            typer.echo(format_rows(rows))

    @cli.command("show")
    def show_cmd(version: str = typer.Argument(..., help="version number or alias")) -> None:
        """One version's metrics, parameters, tags and model card."""
        typer.echo(json.dumps(show(name, version), indent=2, default=str))

    @cli.command("promote")
    def promote_cmd(version: str = typer.Argument(..., help="version number to serve")) -> None:
        """Make VERSION the champion; a running service swaps to it without restart."""
        res = promote(name, version)
        typer.echo(json.dumps(res))
        typer.echo(
            f"{app}: champion is version {res['champion']}" + ("" if res["changed"] else " (unchanged)"), err=True
        )

    @cli.command("rollback")
    def rollback_cmd() -> None:
        """Make the previous champion the champion again."""
        res = rollback(name)
        typer.echo(json.dumps(res))
        typer.echo(f"{app}: rolled back from version {res['previous']} to {res['champion']}", err=True)

    return cli
