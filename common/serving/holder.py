"""The served model and its hot swap: :class:`ModelHolder` loads a new champion completely before switching one
reference, so a request (:func:`get_loaded`, one snapshot) sees the old model or the new one, never a mix; a version
that fails to load is retried with exponential backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from fastapi import HTTPException, Request

from common import registry
from common.serving.inputs import public_error

log = logging.getLogger(__name__)


T = TypeVar("T")


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """A fully loaded model and the registry version it came from (``None`` for a model set by hand)."""

    model: T
    version: registry.ModelVersion | None = None

    @property
    def version_id(self) -> str | None:
        return self.version.version if self.version else None


class ModelHolder(Generic[T]):
    """Holds the model a service answers with; swaps it atomically when the registry's alias moves.

    A version that fails to load (integrity error, loader error) is not fetched again before a backoff delay
    that doubles after each failure (``backoff_s``, then up to ``max_backoff_s`` seconds); the alias moving to
    another version, or ``refresh(force=True)`` (``POST /admin/reload``), retries at once. Each new failure is
    logged once at ERROR; the same failure again at DEBUG.

    Args:
        name: registered model name.
        loader: builds the in-memory model from a verified model directory.
        ref: the alias (or version) to serve.
        clock: monotonic seconds (tests pass a fake one).
    """

    backoff_s: float = 5.0
    max_backoff_s: float = 300.0

    def __init__(
        self,
        name: str,
        loader: Callable[[Path], T],
        ref: str = registry.CHAMPION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.loader, self.ref = name, loader, ref
        self._loaded: Loaded[T] | None = None
        self._refresh_lock = threading.Lock()
        self.on_swap: list[Callable[[Loaded[T]], None]] = []
        self.last_error: str | None = None  # client-safe (no absolute paths)
        self._clock = clock
        self._failed: tuple[str | None, str] | None = None  # (version, error) of the last failure
        self._failures = 0
        self._retry_at = 0.0

    @property
    def ready(self) -> bool:
        return self._loaded is not None

    @property
    def loaded(self) -> Loaded[T] | None:
        """The served model, or None (one read of one reference)."""
        return self._loaded

    def current(self) -> Loaded[T]:
        """The model to use for one whole request; HTTP 503 when none is loaded yet."""
        loaded = self._loaded  # one read of one reference: the snapshot
        if loaded is None:
            raise HTTPException(503, detail=f"no {self.name!r} model loaded yet ({self.ref}); try again shortly")
        return loaded

    def set(self, loaded: Loaded[T]) -> None:
        """Replace the served model (a single reference assignment: atomic for readers)."""
        self._loaded = loaded
        for hook in self.on_swap:
            hook(loaded)

    def refresh(self, *, force: bool = False) -> bool:
        """Load the registry's ``ref`` version if it differs from the served one. Returns True on a swap.

        A failure is logged and re-raised; the current model keeps serving. Without ``force``, a version that
        failed to load is skipped until its backoff delay has passed.
        """
        with self._refresh_lock:
            version: str | None = None
            try:
                version = registry.version_of(self.name, self.ref)  # one cheap query per poll
                if version is None:
                    self.last_error = f"no {self.name!r} version has alias {self.ref!r}"
                    return False
                current = self._loaded
                if current is not None and current.version_id == version:
                    return False
                if (
                    not force
                    and self._failed is not None
                    and self._failed[0] == version
                    and self._clock() < self._retry_at
                ):
                    return False  # backing off: do not download and hash the same broken version again
                mv = registry.get(self.name, version)
                model = self.loader(registry.fetch_model_dir(mv))  # fully built before anyone sees it
            except Exception as exc:
                self._record_failure(version, exc)
                raise
            self.last_error, self._failed, self._failures, self._retry_at = None, None, 0, 0.0
            self.set(Loaded(model, mv))
            log.info("now serving %s version %s", self.name, mv.version)
            return True

    def _record_failure(self, version: str | None, exc: Exception) -> None:
        full = f"{type(exc).__name__}: {exc}"
        key = (version, full)
        new = key != self._failed
        self._failures = 1 if new and (self._failed is None or self._failed[0] != version) else self._failures + 1
        delay = min(self.backoff_s * 2 ** (self._failures - 1), self.max_backoff_s)
        self._failed, self._retry_at = key, self._clock() + delay
        self.last_error = public_error(f"could not load version {version}: {full}" if version else full)
        if new:
            log.error(
                "could not load %s@%s (version %s): %s; next try in %.0f s", self.name, self.ref, version, full, delay
            )
        else:
            log.debug(
                "%s version %s still fails to load (%d tries); next try in %.0f s",
                self.name,
                version,
                self._failures,
                delay,
            )


def get_loaded(request: Request) -> Loaded:
    """FastAPI dependency: the snapshot of the served model for this request."""
    return request.app.state.holder.current()
