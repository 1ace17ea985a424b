"""Property-based fuzzing of a service's OpenAPI, in-process (schemathesis + hypothesis against the ASGI app).

For every operation the app's ``/openapi.json`` documents, schemathesis generates requests that follow the schema
(positive) and requests that break it (negative), sends them to the app in-process, and checks each answer:

- no 5xx (an exception inside the app counts as one);
- the status, content type, headers and body are the ones the OpenAPI documents;
- schema-breaking requests are rejected (4xx), schema-following ones accepted (2xx, or 404/409 for unknown or
  duplicate ids, or a refusal by a rule the app declares because JSON Schema cannot express it);
- a rejected request (4xx) leaves the app's state as it was: ``snapshot()`` (supplied by the app's test) is
  taken before and after each call and must not change.

Failures are collected, not raised, so one run reports everything it found; each carries the request (as curl)
and the response. Bounded: ``max_examples`` per operation and mode, and a wall-clock ``time_budget_s``.

    report = fuzz_app(app, snapshot=lambda: len(app.state.store), max_examples=25)
    assert report.ok, report.summary()
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SERVER_ERROR = "server error (5xx)"
STATE_CHANGED = "state changed by a rejected request"
CALL_FAILED = "the app raised"


@dataclass(frozen=True)
class FuzzFailure:
    """One distinct problem: which operation, what kind, the request (curl) and the response."""

    operation: str
    kind: str
    request: str
    status: int | None
    response: str
    message: str = ""

    def __str__(self) -> str:
        text = f"[{self.kind}] {self.operation} -> {self.status}\n  request:  {self.request}\n"
        text += f"  response: {self.response}"
        if self.message:
            text += "\n  " + self.message.strip().replace("\n", "\n  ")
        return text


@dataclass
class FuzzReport:
    """What a fuzzing run tried and found. ``ok``: no failure at all."""

    app: str
    cases: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: list[FuzzFailure] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    rule_rejections: int = 0

    @property
    def server_errors(self) -> int:
        """Number of cases answered with a 5xx (or an exception)."""
        return sum(n for s, n in self.statuses.items() if s >= 500)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self, limit: int = 20) -> str:
        """A readable account: counts, then each distinct failure (request + response)."""
        codes = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        head = (
            f"{self.app}: {self.cases} cases on {len(self.operations)} operations in {self.seconds:.1f} s "
            f"({codes}); {len(self.failures)} distinct failures"
        )
        if self.rule_rejections:
            head += f"; {self.rule_rejections} valid requests refused by a declared rule"
        if self.stopped_early:
            head += " (time budget reached)"
        return "\n".join([head, *(str(f) for f in self.failures[:limit])])


class _WithoutLifespan:
    """The app for schemathesis's in-process client, minus the lifespan (the caller's TestClient runs it)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("lifespan is run by fuzz_app's TestClient")  # before any message: "unsupported"
        await self.app(scope, receive, send)


def _checks() -> list[Callable]:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi import checks as oc

    return [
        not_a_server_error,
        oc.status_code_conformance,
        oc.content_type_conformance,
        oc.response_headers_conformance,
        oc.response_schema_conformance,
        oc.negative_data_rejection,
        oc.positive_data_acceptance,
    ]


def _truncate(text: str, n: int = 400) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= n else text[:n] + f"... ({len(text)} chars)"


class _Fuzzer:
    def __init__(
        self,
        report: FuzzReport,
        client: Any,
        snapshot: Callable[[], Any] | None,
        headers: Mapping[str, str] | None,
        deadline: float,
        rule_rejections: Mapping[str, Mapping[int, str]],
    ) -> None:
        self.report, self.client, self.snapshot = report, client, snapshot
        self.headers = dict(headers or {})
        self.deadline = deadline
        self.rules = rule_rejections
        self._seen: set[tuple[str, str, str]] = set()
        self.checks = _checks()

    def fail(
        self, operation: str, kind: str, case: Any, status: int | None, response: str, message: str, key: str
    ) -> None:
        if (operation, kind, key) in self._seen:
            return
        self._seen.add((operation, kind, key))
        try:
            request = case.as_curl_command(headers=self.headers)
        except Exception as exc:  # noqa: BLE001 - a request we cannot render is still reported
            request = f"<{type(exc).__name__}: {exc}>"
        self.report.failures.append(
            FuzzFailure(operation, kind, _truncate(request, 600), status, _truncate(response), _truncate(message, 800))
        )

    def _by_rule(self, failure: Any, op: str, status: int, body: str) -> bool:
        """A schema-valid request refused by a rule the app declared (its answer names the rule's field)."""
        from schemathesis.openapi.checks import RejectedPositiveData

        text = self.rules.get(op, {}).get(status)
        return isinstance(failure, RejectedPositiveData) and text is not None and text in body

    def __call__(self, case: Any) -> None:
        from schemathesis.core.failures import Failure, FailureGroup

        if time.monotonic() > self.deadline:
            self.report.stopped_early = True
            return
        op = case.operation.label
        before = self.snapshot() if self.snapshot else None
        try:
            response = case.call(session=self.client, headers=self.headers)
        except Exception as exc:  # noqa: BLE001 - the app raised: that is the finding
            self.report.cases += 1
            self.report.statuses[500] += 1
            self.fail(op, CALL_FAILED, case, None, "", f"{type(exc).__name__}: {exc}", type(exc).__name__)
            return
        self.report.cases += 1
        status = response.status_code
        self.report.statuses[status] += 1
        body = response.text if hasattr(response, "text") else ""
        if status >= 500:
            self.fail(op, SERVER_ERROR, case, status, body, "", str(status))
        try:
            case.validate_response(response, checks=self.checks, headers=self.headers)
        except (FailureGroup, Failure) as exc:
            for failure in exc.exceptions if isinstance(exc, FailureGroup) else [exc]:
                if self._by_rule(failure, op, status, body):
                    self.report.rule_rejections += 1
                    continue
                self.fail(op, failure.title, case, status, body, failure.message, failure.title)
        if self.snapshot is not None and 400 <= status < 500:
            after = self.snapshot()
            if after != before:
                self.fail(op, STATE_CHANGED, case, status, body, f"before: {before!r}\nafter:  {after!r}", str(status))


def fuzz_app(
    app: Any,
    *,
    snapshot: Callable[[], Any] | None = None,
    max_examples: int = 25,
    modes: Iterable[str] = ("positive", "negative"),
    headers: Mapping[str, str] | None = None,
    exclude: Iterable[str] = (),
    only: Iterable[str] | None = None,
    rule_rejections: Mapping[str, Mapping[int, str]] | None = None,
    time_budget_s: float = 120.0,
    seed: int = 0,
    name: str | None = None,
) -> FuzzReport:
    """Fuzz every operation of ``app``'s OpenAPI in-process; returns a :class:`FuzzReport` (never raises on a
    finding).

    Args:
        app: an ASGI app serving ``/openapi.json`` (a FastAPI app from :func:`common.serving.create_app`). Its
            lifespan (model load, registry polling) runs for the duration of the fuzzing.
        snapshot: returns a comparable picture of the app's state (e.g. a hash of its online store and the
            number of logged predictions); must be equal before and after every 4xx answer.
        max_examples: generated cases per operation and mode.
        modes: ``positive`` (schema-following requests) and/or ``negative`` (schema-breaking ones).
        headers: sent with every request (e.g. ``{"X-API-Key": ...}``).
        exclude: operation labels to skip, e.g. ``"POST /admin/reload"``.
        only: fuzz these operation labels only (default: all).
        rule_rejections: schema-valid requests that a documented rule, which JSON Schema cannot express, refuses:
            ``{operation: {status: text the answer must contain}}``, e.g. the fraud service's timestamp window
            relative to the server's clock, ``{"POST /v1/transactions/score": {422: "body.timestamp"}}``. Such
            answers are counted (``report.rule_rejections``), not reported as "schema-valid request rejected";
            every other check (documented status and body, state unchanged) still applies to them.
        time_budget_s: stop generating after this many seconds (the report says so).
        seed: hypothesis seed (runs are reproducible).
    """
    import hypothesis
    import schemathesis
    from fastapi.testclient import TestClient
    from hypothesis import HealthCheck, Phase
    from schemathesis.generation import GenerationMode
    from schemathesis.python import asgi

    start = time.monotonic()
    report = FuzzReport(app=name or getattr(app, "title", type(app).__name__))
    target = _WithoutLifespan(app)
    skip = set(exclude)
    keep = set(only) if only is not None else None
    settings = hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=hypothesis.Verbosity.quiet,
        print_blob=False,
    )
    try:
        with TestClient(app), asgi.get_client(target) as client:
            schema = schemathesis.openapi.from_asgi("/openapi.json", target)
            fuzzer = _Fuzzer(report, client, snapshot, headers, start + time_budget_s, rule_rejections or {})
            for result in schema.get_all_operations():
                operation = result.ok()
                if operation.label in skip or (keep is not None and operation.label not in keep):
                    continue
                report.operations.append(operation.label)
                for mode in modes:
                    strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

                    @hypothesis.seed(seed)
                    @settings
                    @hypothesis.given(case=strategy)
                    def run(case: Any) -> None:
                        fuzzer(case)

                    try:
                        run()
                    except hypothesis.errors.Unsatisfiable:
                        continue  # nothing generable in this mode (e.g. no parameters to break)
    finally:
        asgi.shutdown_lifespans()  # schemathesis keeps a registry of apps; drop ours
    report.seconds = time.monotonic() - start
    return report
