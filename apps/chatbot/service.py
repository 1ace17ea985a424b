"""The chatbot's HTTP gateway: the only listener a user reaches, built with ``common.serving`` like every service.

Routes (besides common's /healthz, /readyz, /metrics, /v1/model, /admin/reload, /docs):

- ``POST /v1/messages``: ``{"sender": conversation id, "text": message}`` -> the bot's messages (text, buttons,
  images; never Rasa's custom payloads, which are internal, e.g. a handoff summary). The message is
  capped at :data:`~apps.chatbot.text.MAX_MESSAGE_CHARS` characters (422 above; bodies over
  ``MLREF_MAX_BODY_BYTES`` get 413 unread) and normalised (:func:`~apps.chatbot.text.normalise_message`) before
  Rasa sees it; a message that is empty once normalised, or that starts with ``/`` but is not a plain button
  payload (``/intent``, no entities), is refused (422, ``body.text``).
- Identity: the customer comes from the signed token in ``X-Customer-Token`` (``apps/chatbot/identity.py``), never
  from ``sender``; no token = an anonymous conversation; a bad or expired one = 401.

Behind it, Rasa (``rasa run``, 127.0.0.1 only) is called through its gateway channel with the per-run token, and
the served "model" is that upstream: the registry's champion loaded in Rasa. The hot swap is common's: when the
champion alias moves, the loader asks Rasa to load the new archive (``PUT /model`` with the token) and only then
does the gateway report the new version. Rasa down, slow or answering nonsense gets 503.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from apps.chatbot import identity
from apps.chatbot.config import MODEL_FILE, REGISTRY_NAME
from apps.chatbot.text import MAX_MESSAGE_CHARS, PAYLOAD, normalise_message
from common import registry, serving

log = logging.getLogger(__name__)
CHANNEL_PATH = "/webhooks/gateway/webhook"  # project/gateway_channel.py
RASA_TOKEN_HEADER = "X-Rasa-Token"
UNAVAILABLE = "the assistant is not available right now; please try again shortly"


@dataclass
class Upstream:
    """The Rasa server behind the gateway: its loopback URL and the per-run token of its channel and API."""

    url: str
    token: str
    timeout_s: float = 30.0
    model_file: Path | None = None
    client: httpx.Client = field(default_factory=lambda: httpx.Client(trust_env=False), repr=False, compare=False)

    def say(self, conversation: str, text: str) -> list[dict[str, Any]]:
        """One message through Rasa's gateway channel -> Rasa's answer (a list); :class:`UpstreamError` if none."""
        try:
            r = self.client.post(
                self.url + CHANNEL_PATH,
                json={"sender": conversation, "message": text},
                headers={RASA_TOKEN_HEADER: self.token},
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(f"Rasa did not answer: {type(exc).__name__}") from exc
        if r.status_code != 200:
            raise UpstreamError(f"Rasa answered HTTP {r.status_code}")
        try:
            answer = r.json()
        except ValueError as exc:
            raise UpstreamError("Rasa's answer is not JSON") from exc
        if not isinstance(answer, list):
            raise UpstreamError("Rasa's answer is not a list of messages")
        return answer

    def load(self, model_file: Path) -> Upstream:
        """Ask Rasa to load ``model_file`` (``PUT /model`` with the token); blocks until it is served."""
        r = self.client.put(
            f"{self.url}/model", params={"token": self.token}, json={"model_file": str(model_file)}, timeout=600
        )
        if r.status_code != 204:
            raise RuntimeError(f"Rasa could not load {model_file}: HTTP {r.status_code} {r.text[:200]}")
        return Upstream(self.url, self.token, self.timeout_s, model_file, self.client)

    def ready(self) -> bool:
        """Rasa answers ``GET /status`` (with the token) with a loaded model."""
        try:
            r = self.client.get(f"{self.url}/status", params={"token": self.token}, timeout=2.0)
            return r.status_code == 200 and bool(r.json().get("model_file"))
        except (httpx.HTTPError, ValueError):
            return False


class UpstreamError(RuntimeError):
    """Rasa could not give an answer (down, slow, or an unexpected answer)."""


# ----------------------------------------------------------------------------------------------------- schemas
class MessageIn(BaseModel):
    sender: str = Field(
        pattern=identity.ID_PATTERN,
        description="the conversation (e.g. a chat window); 1-64 of A-Z a-z 0-9 _ . @ -. It does not say who the "
        "customer is: that comes from X-Customer-Token",
        examples=["web-3f2a"],
    )
    text: str = Field(
        min_length=1,
        max_length=MAX_MESSAGE_CHARS,
        description=f"the user's message, at most {MAX_MESSAGE_CHARS} characters; control characters and unpaired "
        "surrogates are replaced, whitespace collapsed; '/intent' is a button payload",
        examples=["where is my order SH12345?"],
    )


class Button(BaseModel):
    title: str
    payload: str = Field(description="send it back as the next message's text")


class BotMessage(BaseModel):
    text: str | None = None
    buttons: list[Button] | None = None
    image: str | None = None


class MessagesOut(BaseModel):
    sender: str
    customer: str | None = Field(description="whom the conversation acts for (from the token); null: anonymous")
    messages: list[BotMessage]
    model_version: str | None


def _bot_message(raw: Any) -> BotMessage | None:
    """Rasa's message -> the documented shape (unknown keys and malformed parts dropped). Custom payloads (e.g. a
    handoff summary) are internal: they never reach the customer, and a message that is only one is dropped."""
    if not isinstance(raw, dict):
        return None
    text = raw.get("text") if isinstance(raw.get("text"), str) else None
    buttons = [
        Button(title=b["title"], payload=b["payload"])
        for b in raw.get("buttons") or []
        if isinstance(b, dict) and isinstance(b.get("title"), str) and isinstance(b.get("payload"), str)
    ]
    image = raw.get("image") if isinstance(raw.get("image"), str) else None
    if not (text and text.strip()) and not buttons and image is None:
        return None
    return BotMessage(text=text, buttons=buttons or None, image=image)


def _text_error(message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", "text"), "msg": message, "type": "value_error"}])


def build_router(secret: bytes | None) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["chatbot"])

    # plain ``def``: the call to Rasa blocks for ~0.1-0.3 s; it runs in the thread pool, so health checks and other
    # conversations are not held up behind it
    @router.post("/messages", response_model=MessagesOut)
    def message(
        body: MessageIn,
        request: Request,
        x_customer_token: Annotated[
            str | None,
            Header(
                description="signed customer token (`python -m apps.chatbot token CUSTOMER`); without it the "
                "conversation is anonymous",
            ),
        ] = None,
    ) -> MessagesOut:
        """One user message -> the assistant's answers."""
        customer = None
        if x_customer_token is not None:
            if secret is None:
                raise HTTPException(401, detail=f"{identity.TOKEN_HEADER}: this server has no customer secret set")
            try:
                customer = identity.verify_token(x_customer_token, secret)
            except identity.TokenError as exc:
                raise HTTPException(401, detail=f"{identity.TOKEN_HEADER}: {exc}") from None
        text = normalise_message(body.text)
        if not text:
            raise _text_error("is empty once control characters and spaces are removed")
        if len(text) > MAX_MESSAGE_CHARS:
            raise _text_error(f"is longer than {MAX_MESSAGE_CHARS} characters once normalised")
        if text.startswith("/") and not PAYLOAD.match(text):
            raise _text_error("starts with '/' but is not a button payload like /human_handoff")
        loaded = serving.get_loaded(request)
        try:
            answer = loaded.model.say(identity.conversation_id(customer, body.sender), text)
        except UpstreamError as exc:
            log.warning("conversation %s: %s", body.sender, exc)
            raise HTTPException(503, detail=UNAVAILABLE) from None
        messages = [m for m in map(_bot_message, answer) if m is not None]
        request.app.state.metrics.observe_prediction(len(messages))
        return MessagesOut(sender=body.sender, customer=customer, messages=messages, model_version=loaded.version_id)

    return router


def build_app(
    upstream: Upstream | None,
    version: registry.ModelVersion | None = None,
    *,
    refresh_interval_s: float | None = 10.0,
    secret: bytes | type[...] | None = ...,
) -> FastAPI:
    """The gateway in front of ``upstream`` (a Rasa server already serving ``version``; None: set later, as
    :func:`with_rasa` does once Rasa has started -- until then /readyz says 503).

    ``refresh_interval_s``: how often to check the registry's champion and load a new one into Rasa (None:
    never). ``secret``: the customer-token secret (default ``MLREF_CHATBOT_SECRET``; None: anonymous only).
    """
    key = identity.secret_from_env() if secret is ... else secret
    if key is None:
        log.warning(
            "%s is not set: customer tokens cannot be checked, every conversation is anonymous", identity.SECRET_ENV
        )

    def load(model_dir: Path) -> Upstream:  # a new champion: Rasa loads its archive, then the gateway reports it
        return app.state.upstream.load(model_dir / MODEL_FILE)

    holder = serving.ModelHolder(REGISTRY_NAME, load)
    if upstream is not None:
        holder.set(serving.Loaded(upstream, version))
    app = serving.create_app(
        "mlref chatbot gateway",
        holder,
        [build_router(key)],
        refresh_interval_s=refresh_interval_s,
        load_on_startup=False,
        prediction_buckets=(0, 1, 2, 3, 4, 6, 10),
    )
    app.state.upstream = upstream
    return app


def with_rasa(
    app: FastAPI,
    model: Path,
    version: registry.ModelVersion | None,
    run_dir: Path,
    cfg: Any,
    *,
    tracker_db: Path,
    handoff_log: Path | None = None,
    rasa_port: int | None = None,
    actions_port: int | None = None,
) -> FastAPI:
    """Make the gateway ``app`` (built with no upstream) start Rasa on ``model`` and the action server when it
    starts (``rasa_env.servers``, on 127.0.0.1 behind per-run tokens) and stop both when it stops: a service that
    needs nothing else running. ``app.state.servers`` is the running pair; a failed start is kept in
    ``app.state.start_error`` (uvicorn only logs it)."""
    from apps.chatbot import rasa_env

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        try:
            servers = rasa_env.servers(
                model,
                run_dir,
                cfg,
                tracker_db=tracker_db,
                rasa_port=rasa_port,
                actions_port=actions_port,
                handoff_log=handoff_log,
            )
            srv = servers.__enter__()
        except BaseException as exc:
            a.state.start_error = exc
            raise
        upstream = Upstream(srv.url, srv.token, cfg.upstream_timeout_s, model)
        a.state.upstream, a.state.servers = upstream, srv
        a.state.holder.set(serving.Loaded(upstream, version))
        try:
            async with inner(a) as state:
                yield state
        finally:
            upstream.client.close()
            servers.__exit__(None, None, None)

    app.router.lifespan_context = lifespan
    app.state.start_error = None
    return app


# ------------------------------------------------------------------------------------------- running and calling
@dataclass
class Assistant:
    """A running assistant: the gateway at ``url`` in front of Rasa and the action server (``servers``)."""

    url: str
    servers: Any  # rasa_env.Servers
    app: FastAPI


@contextmanager
def running(
    model: Path,
    run_dir: Path,
    cfg: Any,
    *,
    tracker_db: Path,
    version: registry.ModelVersion | None = None,
    secret: bytes | None = None,
    handoff_log: Path | None = None,
    rasa_port: int | None = None,
    actions_port: int | None = None,
    app: FastAPI | None = None,
) -> Iterator[Assistant]:
    """The gateway that starts Rasa and the action server (:func:`with_rasa`) on free loopback ports, in a
    background server, for demos, benchmarks and tests; everything is stopped when the block ends. ``secret``: the
    customer-token secret; ``app``: a gateway built with no upstream (default: :func:`build_app`'s)."""
    from apps.chatbot import rasa_env

    gateway = with_rasa(
        app if app is not None else build_app(None, version, refresh_interval_s=None, secret=secret),
        model,
        version,
        run_dir,
        cfg,
        tracker_db=tracker_db,
        handoff_log=handoff_log,
        rasa_port=rasa_port or rasa_env.free_port(),
        actions_port=actions_port or rasa_env.free_port(),
    )
    with in_background(gateway, cfg) as assistant:
        yield assistant


@contextmanager
def in_background(gateway: FastAPI, cfg: Any) -> Iterator[Assistant]:
    """A gateway made by :func:`with_rasa` in a background server on a free loopback port: started (Rasa and the
    action server with it) when the block begins, all stopped when it ends. A failed start raises its own error."""
    server = serving.BackgroundServer(gateway, start_timeout_s=2 * cfg.startup_timeout_s + 60)
    try:
        server.__enter__()
    except RuntimeError:
        if gateway.state.start_error is not None:  # say why (a port in use, Rasa missing...), not only "no start"
            raise gateway.state.start_error from None
        raise
    try:
        yield Assistant(url=server.url, servers=gateway.state.servers, app=gateway)
    finally:
        server.__exit__(None, None, None)
        server.thread.join(timeout=120)  # the lifespan's end stops Rasa and the action server: wait for it


def say(
    url: str,
    sender: str,
    text: str,
    *,
    token: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 60.0,
) -> list[dict[str, Any]]:
    """One message to a gateway (``POST /v1/messages``) -> the bot's messages; ``token``: a customer token.
    Raises ``httpx.HTTPStatusError`` on a refusal (its ``detail`` in the message)."""
    headers = {}
    if token:
        headers[identity.TOKEN_HEADER] = token
    key = api_key if api_key is not None else os.environ.get("MLREF_API_KEY")
    if key:
        headers[serving.API_KEY_HEADER] = key
    r = httpx.post(f"{url}/v1/messages", json={"sender": sender, "text": text}, headers=headers, timeout=timeout_s)
    r.raise_for_status()
    return r.json()["messages"]


def customer_lines(messages: list[dict[str, Any]]) -> list[str]:
    """What a customer sees of the bot's messages, one line each: the text, with buttons as ``[title]`` options.

    Anything else (a custom payload from an older gateway, an empty message) is not shown: internal payloads such
    as handoff summaries go to the handoff log, never to the customer."""
    lines = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        text = m.get("text") if isinstance(m.get("text"), str) else ""
        titles = [b["title"] for b in m.get("buttons") or [] if isinstance(b, dict) and isinstance(b.get("title"), str)]
        line = " ".join([text.strip(), *(f"[{t}]" for t in titles)]).strip()
        if line:
            lines.append(line)
    return lines


def chat(
    url: str,
    sender: str,
    *,
    token: str | None = None,
    ask: Callable[[str], str] = input,
    show: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
) -> None:
    """A terminal conversation with the gateway at ``url`` until ``/quit`` (or end of input): each answer as
    :func:`customer_lines`; a refusal is shown and the conversation goes on. Raises ``httpx.HTTPError`` when no
    server answers."""
    while True:
        try:
            text = ask("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            return
        if text in ("/quit", "/exit"):
            return
        if not text:
            continue
        try:
            for line in customer_lines(say(url, sender, text, token=token)):
                show("bot> " + line)
        except httpx.HTTPStatusError as exc:
            try:
                detail = exc.response.json().get("message") or exc.response.json().get("detail")
            except ValueError:
                detail = exc.response.text[:200]
            warn(f"refused ({exc.response.status_code}): {detail}")
