"""The probe kit every app's tests use: hostile input, limits, faults and load, reported as one table.

- :mod:`mlref_testing.probe.fuzz`: property-based fuzzing of an app's OpenAPI, in-process (no 5xx, answers as
  documented, rejected requests change no state);
- :mod:`mlref_testing.probe.load`: a bounded open-loop load test from a separate client process (p50/p95/p99,
  errors, achieved rate, load average);
- :mod:`mlref_testing.probe.faults`: kill -9, damaged artifacts and registries, concurrent commands (test helpers);
- here: :func:`http_probes` (oversized body, API key, non-finite and malformed input) and the probe table.

Each probe gives a :class:`Probe` row (app, probe, tried, expected, observed, ok). Tests marked ``reliability``
assert on the rows and, when ``MLREF_PROBE_OUT`` names a file, append them to it (JSON lines);
``python -m mlref_testing.probe FILE`` prints the table per app, writes it as markdown beside the file and into the
README's reliability section. ``make probe`` does all of it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROBE_OUT_ENV = "MLREF_PROBE_OUT"
README_START, README_END = "<!-- probe-table -->", "<!-- /probe-table -->"
PROBE_API_KEY = "probe-key"


@dataclass(frozen=True)
class Probe:
    """One row of the probe table."""

    app: str
    probe: str
    tried: str
    expected: str
    observed: str
    ok: bool

    def __str__(self) -> str:
        return f"{self.app} | {self.probe}: tried {self.tried}; expected {self.expected}; observed {self.observed}"


def record(rows: Iterable[Probe], path: str | Path | None = None) -> list[Probe]:
    """Append ``rows`` to ``path`` (default ``$MLREF_PROBE_OUT``; nothing when neither is set). Returns them."""
    rows = list(rows)
    target = path or os.environ.get(PROBE_OUT_ENV)
    if target:
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a") as fh:  # one write per call: rows of parallel writers do not interleave
            fh.write("".join(json.dumps(asdict(r)) + "\n" for r in rows))
    return rows


def failed(rows: Iterable[Probe]) -> str:
    """The failed rows, one per line ('' when all passed): an assertion message."""
    return "\n".join(str(r) for r in rows if not r.ok)


def markdown(rows: Iterable[Probe]) -> str:
    """The probe table, one section per app."""
    by_app: dict[str, list[Probe]] = {}
    for r in rows:
        by_app.setdefault(r.app, []).append(r)
    if not by_app:
        return "(no probe results yet: run `make probe`)"
    out = []
    for app, app_rows in sorted(by_app.items()):
        out += [f"**{app}**", "", "| probe | tried | expected | observed | |", "|---|---|---|---|---|"]
        out += [
            f"| {r.probe} | {r.tried} | {r.expected} | {r.observed} | {'ok' if r.ok else '**FAILED**'} |"
            for r in app_rows
        ]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def load_rows(path: str | Path) -> list[Probe]:
    """Rows recorded in ``path`` (the last row wins per app and probe)."""
    rows: dict[tuple[str, str], Probe] = {}
    p = Path(path)
    if p.exists():
        for line in p.read_text().splitlines():
            if line.strip():
                r = Probe(**json.loads(line))
                rows[(r.app, r.probe)] = r
    return list(rows.values())


# ----------------------------------------------------------------------------- HTTP probes
def http_probes(
    app_name: str,
    client: Any,
    *,
    path: str,
    body: Mapping[str, Any],
    number_field: str,
    snapshot: Callable[[], Any] | None = None,
    api_key: str | None = PROBE_API_KEY,
    max_body_bytes: int | None = None,
) -> list[Probe]:
    """Hostile requests every service must refuse cleanly, sent through ``client`` (a TestClient of an app built
    with ``MLREF_API_KEY=api_key``). ``body`` is a good JSON body for ``POST path``; ``number_field`` one of its
    numeric fields. Each rejection must also leave ``snapshot()`` unchanged.
    """
    from common.config import get_settings

    limit = max_body_bytes or get_settings().max_body_bytes
    auth = {"X-API-Key": api_key} if api_key else {}
    json_headers = {"content-type": "application/json", **auth}
    rows: list[Probe] = []

    def probe(name: str, tried: str, expected: int, send: Callable[[], Any], must_say: str = "") -> None:
        before = snapshot() if snapshot else None
        r = send()
        after = snapshot() if snapshot else None
        try:
            detail = r.json().get("message") or r.json().get("detail")
        except ValueError:
            detail = r.text[:80]
        said = must_say.lower() in json.dumps(detail).lower()
        same = before == after or expected < 400  # an accepted request may change the state
        observed = f"{r.status_code}" + ("" if same else ", STATE CHANGED")
        if must_say and not said:
            observed += f", message without {must_say!r}: {str(detail)[:80]}"
        want = f"{expected}, state unchanged" if expected >= 400 else f"{expected}"
        rows.append(Probe(app_name, name, tried, want, observed, r.status_code == expected and same and said))

    good = json.dumps(body)
    probe("good request", f"POST {path}", 200, lambda: client.post(path, content=good, headers=json_headers))
    big = json.dumps({**body, "padding": "x" * (limit + 1)})
    probe(
        "oversized body",
        f"{len(big) / 2**20:.1f} MiB body (limit {limit / 2**20:g} MiB)",
        413,
        lambda: client.post(path, content=big, headers=json_headers),
        "MLREF_MAX_BODY_BYTES",
    )
    if api_key:
        probe(
            "no API key",
            f"POST {path} without X-API-Key",
            401,
            lambda: client.post(path, content=good, headers={"content-type": "application/json"}),
            "X-API-Key",
        )
        probe(
            "wrong API key",
            f"POST {path} with a wrong X-API-Key",
            401,
            lambda: client.post(path, content=good, headers={"content-type": "application/json", "X-API-Key": "wrong"}),
            "X-API-Key",
        )
    for token in ("NaN", "Infinity", "1e999"):
        text = re.sub(rf'"{re.escape(number_field)}": [^,}}]+', f'"{number_field}": {token}', good)
        probe(
            f"non-finite number ({token})",
            f"{number_field}: {token}",
            422,
            lambda text=text: client.post(path, content=text, headers=json_headers),
            number_field,
        )
    probe(
        "malformed JSON",
        "a truncated body",
        422,
        lambda: client.post(path, content=good[:-3], headers=json_headers),
        "JSON",
    )
    probe(
        "wrong type",
        f"{number_field}: true",
        422,
        lambda: client.post(path, json={**body, number_field: True}, headers=auth),
        number_field,
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m mlref_testing.probe FILE [--readme]``: print the table of FILE's rows, write FILE.md beside it and,
    with ``--readme``, the README's probe block. Exit 1 when a probe failed, 2 when FILE is missing."""
    args = list(sys.argv[1:] if argv is None else argv)
    readme = "--readme" in args
    args = [a for a in args if a != "--readme"]
    path = Path(args[0]) if args else ROOT / "bench" / "results" / "probe.jsonl"
    if not path.exists():
        print(f"error: no probe results at {path}: run `make probe`", file=sys.stderr)
        return 2
    rows = load_rows(path)
    table = markdown(rows)
    print(table)
    path.with_suffix(".md").write_text("# Probe results\n\nWritten by `make probe`.\n\n" + table)
    if readme:
        file = ROOT / "README.md"
        text = file.read_text()
        if README_START in text and README_END in text:
            new = re.sub(
                re.escape(README_START) + ".*?" + re.escape(README_END),
                lambda _: f"{README_START}\n{table}{README_END}",
                text,
                flags=re.S,
            )
            file.write_text(new)
    bad = [r for r in rows if not r.ok]
    if bad:
        print(f"{len(bad)} probe(s) failed", file=sys.stderr)
    return 1 if bad else 0
