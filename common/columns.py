"""Your table's column names, mapped onto the names an app expects: one helper for every app whose input is a table.

A user's file rarely uses the app's names (``engine_id`` for ``unit``, ``T24`` for a sensor, ``txn_time`` for
``timestamp``). :class:`ColumnMap` renames the columns that have a role (``{"unit": "engine_id"}``), keeps listed
feature columns under a prefix the app recognises (``T24`` -> ``sensor_T24``: the user's name stays readable in
reports and the API), and reports every column it did not use instead of dropping it silently::

    cmap = ColumnMap(roles={"unit": "engine_id"}, features=("T24", "P30"), feature_prefix="sensor_")
    df, ignored = cmap.apply(raw, source="fleet.csv")   # DataError naming any column that is not there
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from common.errors import DataError

log = logging.getLogger(__name__)


def split_names(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"T24, P30"`` or ``["T24", "P30"]`` -> ``("T24", "P30")``; empty or None -> ``()``."""
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(s.strip() for s in items if str(s).strip())


@dataclass(frozen=True)
class ColumnMap:
    """How a user's table maps onto the app's columns.

    ``roles``: the app's name -> the user's column (only the ones that differ). ``features``: the user's feature
    columns, kept as ``feature_prefix + name`` (``()``: the table already uses the app's names). ``known``: other
    column names (and name prefixes) the app reads as they are, so they are not reported as ignored.
    With ``features`` listed, other columns carrying ``feature_prefix`` are dropped (and reported): the list is
    what the app uses."""

    roles: Mapping[str, str] = field(default_factory=dict)
    features: tuple[str, ...] = ()
    feature_prefix: str = ""
    known: tuple[str, ...] = ()
    known_prefixes: tuple[str, ...] = ()

    @property
    def is_identity(self) -> bool:
        return not any(k != v for k, v in self.roles.items()) and not self.features

    def feature_name(self, column: str) -> str:
        """The app's name of a user's feature column (``T24`` -> ``sensor_T24``)."""
        return column if column.startswith(self.feature_prefix) else self.feature_prefix + column

    def apply(self, df: pd.DataFrame, *, source: str = "data") -> tuple[pd.DataFrame, list[str]]:
        """``df`` with the app's column names, and the user's columns left unused (also logged). A mapped column
        that is missing, or a rename onto a name the table already has, is a :class:`DataError`."""
        wanted = {user: app for app, user in self.roles.items() if user != app}
        wanted.update({col: self.feature_name(col) for col in self.features})
        missing = [c for c in wanted if c not in df.columns]
        if missing:
            raise DataError(
                f"{source}: mapped column(s) {missing} not found; the table has {list(map(str, df.columns))[:20]}"
            )
        clash = [new for old, new in wanted.items() if new in df.columns and new not in wanted]
        if clash:
            raise DataError(f"{source}: mapping onto {clash}, which the table already has; map or drop those first")
        out = df.rename(columns=wanted)
        used = set(wanted.values()) | set(self.roles) | set(self.known)
        if self.features and self.feature_prefix:
            unlisted = [c for c in out.columns if str(c).startswith(self.feature_prefix) and c not in used]
            out = out.drop(columns=unlisted)
        else:
            unlisted = []
        prefixes = self.known_prefixes + ((self.feature_prefix,) if self.feature_prefix and not self.features else ())
        ignored = [str(c) for c in unlisted] + [
            str(c) for c in out.columns if c not in used and not any(str(c).startswith(p) for p in prefixes if p)
        ]
        if ignored:
            log.warning("%s: column(s) not used: %s", source, ", ".join(ignored))
        return out, ignored
