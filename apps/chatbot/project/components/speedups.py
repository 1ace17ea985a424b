"""Rasa 3.6 validates every action-server response with ``jsonschema.validate``, which first checks the response
*schema* against the JSON Schema meta-schema, on every call. Profiled in this project's REST benchmark that check
took 21 % of the Rasa server's time (most of a form turn). :func:`install` keeps the same validation and the same
error, with the schema checked once and its validator reused. Installed by ``components/featurizer.py``, so it is
in force in every process that loads this project's models (``rasa run``, ``rasa test``, the parser)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jsonschema import ValidationError, validators
from jsonschema.exceptions import best_match
from rasa.core.actions.action import RemoteAction
from rasa.shared.constants import DOCS_BASE_URL


@lru_cache(maxsize=1)
def _response_validator() -> Any:
    schema = RemoteAction.action_response_format_spec()
    cls = validators.validator_for(schema)
    cls.check_schema(schema)  # once per process, not once per response
    return cls(schema)


def _validate_action_result(self: RemoteAction, result: dict[str, Any]) -> bool:  # noqa: ARG001 - a method
    """RemoteAction._validate_action_result with a cached validator: True, or the best-matching ValidationError."""
    error: ValidationError | None = best_match(_response_validator().iter_errors(result))
    if error is None:
        return True
    error.message += (
        ". Failed to validate Action server response from API, make sure your response from the Action endpoint is "
        f"valid. For more information about the format visit {DOCS_BASE_URL}/custom-actions"
    )
    raise error


def install() -> None:
    """Replace the per-call schema check (idempotent)."""
    RemoteAction._validate_action_result = _validate_action_result
