"""The chatbot pipeline: every stage the CLI, the demo and the benchmark run, in one place.

``data (the Rasa project's NLU examples, stories and rules + labelled messages from --dataset) -> fit (validate,
rasa train, end-to-end test stories + held-out NLU in one rasa test, cross-validation) -> register (the archive,
its test results, the intent-mix reference, the model card) -> evaluate (intents on labelled messages vs the
majority intent; the test stories) -> service (the gateway in front of Rasa and the action server) / batch
(messages -> intents) -> monitor (intent and confidence drift of recent messages, fallback and handoff rates) ->
retrain (test stories + held-out NLU gate)``. :class:`ChatbotApp` implements :class:`common.app.App`;
``__main__.py`` builds the command line from it. Rasa itself runs in ``.venv-chatbot`` (``rasa_env.py``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from apps.chatbot import lifecycle
from apps.chatbot.config import APP, MODEL_FILE, REGISTRY_NAME, Config
from apps.chatbot.data import holdout_file, read_labelled, read_rasa_nlu, training_messages
from common import registry
from common.app import App, Evaluation, Fitted, Monitoring, Option, Tiny
from common.errors import DataError, UserError
from common.workspace import Workspace

log = logging.getLogger(__name__)
NO_MODEL_YET = (
    "no chatbot model is registered yet: run `python -m apps.chatbot train` first (or `python -m apps.chatbot demo`, "
    "which trains and serves one in its own home)"
)


@dataclass
class ChatData:
    """What the assistant trains on: the Rasa project (``apps/chatbot/project``: NLU examples, stories, rules,
    domain) plus ``labelled`` messages (``text, intent``) from ``--dataset``, or None for the project alone.
    ``evaluate`` measures on ``labelled`` (default: the held-out set ``tests/nlu_holdout.yml``)."""

    labelled: pd.DataFrame | None
    name: str


@dataclass
class Built(Fitted[Path]):
    """``fit``'s result: ``model`` is Rasa's archive; ``build`` the tested build it came from (what ``register``
    stores: test stories, held-out NLU, cross-validation, the training messages)."""

    build: lifecycle.Trained | None = None


class ChatbotApp(App[Config, ChatData, Path]):
    """The Mlref Shop's Rasa assistant: intents, forms, custom actions, handoff, behind a gateway."""

    name = APP
    registry_name = REGISTRY_NAME
    config_type = Config
    default_dataset = "project"
    recent_required = False  # monitor without --dataset reads the tracker store
    options = {
        "serve": (
            Option("rasa_port", int | None, None, "Rasa's port on 127.0.0.1 (default 5005)"),
            Option("actions_port", int | None, None, "the action server's port on 127.0.0.1 (default 5055)"),
            Option("ref", str | None, None, "registry alias or version number (default champion)"),
            Option("config", Path | None, None, "JSON file with the app's config fields (flags override it)"),
            Option(
                "refresh_s",
                float | None,
                None,
                "check the registry this often; load a new champion without restart (0: never; default 10)",
                min=0.0,
            ),
        ),
        "monitor": (
            Option("days", float | None, None, "only the last N days", min=0.0),
            Option("low_confidence", float, 0.6, "export messages whose best intent is below this", min=0.0, max=1.0),
            Option("max_fallback_rate", float, 0.15, "alert above this share of fallbacks", min=0.0, max=1.0),
            Option("max_handoff_rate", float, 0.2, "alert above this share of handoffs", min=0.0, max=1.0),
        ),
    }
    dataset_help = (
        "labelled messages (CSV text,intent): train/retrain add them to the project's training data, evaluate "
        "measures on them (default: the project alone / its held-out set tests/nlu_holdout.yml)"
    )
    recent_help = (
        "a Rasa SQLite tracker store (default: the one `serve` writes) or a file of recent messages "
        "(CSV/parquet with a 'text' column)"
    )
    flags = {
        "train": ("quick", "text_column", "intent_column"),
        "evaluate": ("ref", "text_column", "intent_column"),
        "retrain": ("quick", "text_column", "intent_column"),
    }
    no_tuning = "the intent classifier has one setting, classifier_c in --config (None: cross-validation picks it)"
    batch_chunk = (100_000, "messages per chunk")

    def load_data(self, ws: Workspace, dataset: str | None, cfg: Config) -> ChatData:
        labelled = None
        if dataset is not None:
            labelled = read_labelled(dataset, text_column=cfg.text_column, intent_column=cfg.intent_column)
        return ChatData(labelled, self.dataset_name(dataset))

    def fit(self, ws: Workspace, data: ChatData, cfg: Config, *, tune: int = 0) -> Built:
        """Validate the data, train, run the end-to-end test stories and the held-out NLU test, cross-validate;
        refuse (exit 2) when a test story fails, so such a model is never registered."""
        trained = lifecycle.build(cfg, extra=data.labelled, ws=ws)
        s = trained.stories
        if not s["all_passed"]:
            raise UserError(
                f"{s['total'] - s['passed']} test stories failed ({s['failed']}); see {trained.workdir / 'results'}. "
                "Not registered."
            )
        metrics = trained.metrics()
        summary = {
            "metrics": metrics | {"train_s": round(trained.train_s, 1)},
            "test_stories": s,
            "workdir": str(trained.workdir),
        }
        return Built(trained.model, metrics=metrics, params=cfg.to_dict(), summary=summary, build=trained)

    def register(
        self, ws: Workspace, fitted: Fitted[Path], data: ChatData, cfg: Config, *, dataset: str, alias: str | None
    ) -> registry.ModelVersion:
        if not isinstance(fitted, Built) or fitted.build is None:
            raise TypeError("register takes what ChatbotApp.fit returns (the archive with its test results)")
        return lifecycle.register(fitted.build, cfg, dataset=dataset, alias=alias)

    def load_model(self, ws: Workspace, ref: str = registry.CHAMPION) -> tuple[Path, registry.ModelVersion]:
        """Rasa's archive of an alias or version (hash-verified)."""
        return lifecycle.model_path(ref)

    def evaluate(
        self, ws: Workspace, data: ChatData, cfg: Config, out: Path, *, fitted: Fitted[Path] | None = None
    ) -> Evaluation:
        """The registered model ``cfg.ref`` (or ``fitted``) on labelled messages against the majority intent, and
        the conversations: its end-to-end test stories (run at training, on the project's test stories)."""
        from apps.chatbot import nlu
        from common import reports

        if fitted is not None:
            model, version = fitted.model, None
            stories = fitted.build.stories if isinstance(fitted, Built) and fitted.build else None
        else:
            model, mv = lifecycle.model_path(cfg.ref)
            version = mv.version
            results = model.parent / lifecycle.EVALUATION
            stories = json.loads(results.read_text()).get("stories") if results.is_file() else None
        df = data.labelled if data.labelled is not None else read_rasa_nlu(holdout_file())
        with nlu.Parser(model, cfg) as parser:
            scores, preds = nlu.score_frame(parser, df)
        top = training_messages()["intent"].str.split("/").str[0].value_counts().index[0]
        baseline = nlu.intent_scores([i.split("/")[0] for i in df["intent"]], [top] * len(df))
        reports.write_text(out / "predictions.csv", preds.to_csv(index=False))
        sections = {}
        if stories:
            failed = "\n".join(f"- {name}" for name in stories["failed"]) or "none"
            sections["Conversations: end-to-end test stories"] = (
                f"{stories['passed']} of {stories['total']} passed at training (`rasa test`). Failed:\n{failed}"
            )
        label = f"v{version}" if version else "model"
        on = data.name if data.labelled is not None else "the held-out set"
        path = reports.write_report(
            out,
            title=f"{REGISTRY_NAME} {label}: intents on {on}",
            metrics={label: scores, "majority intent": baseline},
            baselines=["majority intent"],
            higher_is_better={"accuracy": True, "macro_f1": True},
            sections=sections,
        )
        return Evaluation(
            metrics={"model": scores, "majority": baseline},
            report=path,
            extra={"version": version, "test_stories": stories},
        )

    def served_model(self, ref: str) -> tuple[Path, registry.ModelVersion]:
        """The archive to serve; before any training, a one-line hint to train first."""
        if ref == registry.CHAMPION and registry.version_of(REGISTRY_NAME, registry.CHAMPION) is None:
            raise UserError(NO_MODEL_YET)
        return lifecycle.model_path(ref)

    def service(
        self,
        ws: Workspace,
        cfg: Config | None = None,
        *,
        servers: Any = None,
        secret: bytes | type[...] | None = ...,
    ) -> Any:
        """The gateway (``POST /v1/messages``, health, readiness, metrics, docs) serving the model ``cfg.ref``.

        With ``servers`` (``rasa_env.Servers`` already running that model) it fronts them; without, starting the
        gateway starts Rasa and the action server on 127.0.0.1 (tracker store ``<workspace>/chatbot/tracker.db``)
        and stopping it stops them. It checks the registry every ``cfg.refresh_s`` and loads a new champion."""
        from apps.chatbot import service

        cfg = cfg or Config()
        model, mv = self.served_model(cfg.ref)
        refresh = cfg.refresh_s if cfg.refresh_s and cfg.ref == registry.CHAMPION else None
        if servers is not None:
            upstream = service.Upstream(servers.url, servers.token, cfg.upstream_timeout_s, model)
            return service.build_app(upstream, mv, refresh_interval_s=refresh, secret=secret)
        gateway = service.build_app(None, mv, refresh_interval_s=refresh, secret=secret)
        return service.with_rasa(
            gateway,
            model,
            mv,
            lifecycle.workdir("serve", ws),
            cfg,
            tracker_db=lifecycle.tracker_db(ws),
            handoff_log=handoff_log(ws),
        )

    def serve(
        self, ws: Workspace, host: str | None, port: int | None, cfg: Config | None = None, **options: Any
    ) -> None:
        """Rasa and the action server (loopback, per-run tokens), then the gateway on ``host:port`` in front of
        them. Rasa starts before uvicorn, so a port in use is said at once and Ctrl-C or SIGTERM while the model
        loads stops everything; both end with the gateway. ``options``: ``config`` (a file) and the config fields
        ``rasa_port``, ``actions_port``, ``ref``, ``refresh_s`` (None: the file's or the default)."""
        if cfg is None:
            path = options.pop("config", None)
            cfg = self.config(path, {k: v for k, v in options.items() if v is not None})
        import contextlib

        import typer

        from apps.chatbot import identity, rasa_env
        from common import serving

        cfg = cfg or Config()
        model, mv = self.served_model(cfg.ref)
        try:
            secret = identity.secret_from_env()
        except ValueError as exc:
            raise UserError(str(exc)) from None
        host, port = host or ws.host, port or ws.port
        _check_bind(host, port)
        signal.signal(signal.SIGTERM, _stop_on_sigterm)  # while loading; uvicorn handles it while serving
        run_dir = lifecycle.workdir("serve", ws)
        try:
            with rasa_env.servers(
                model,
                run_dir,
                cfg,
                tracker_db=lifecycle.tracker_db(ws),
                rasa_port=cfg.rasa_port,
                actions_port=cfg.actions_port,
                handoff_log=handoff_log(ws),
            ) as srv:
                gateway = self.service(ws, cfg, servers=srv, secret=secret)
                typer.echo(
                    f"chatbot v{mv.version}: POST http://{host}:{port}/v1/messages (docs: /docs); Rasa on {srv.url} "
                    f"and actions on {srv.actions_url}, loopback only; loaded in {srv.load_s:.0f} s; logs in "
                    f"{run_dir}. Ctrl-C stops.",
                    err=True,
                )
                with contextlib.suppress(_Stopped):
                    serving.serve(gateway, host, port, log_level="warning")
                typer.echo("stopping the servers", err=True)
        except (KeyboardInterrupt, _Stopped):  # stopped while loading: the `with` block stopped both servers
            typer.echo("stopped the servers", err=True)

    def batch(self, ws: Workspace, model: Path, source: Path, output: Path, *, chunksize: int) -> dict[str, Any]:
        """A file of messages (CSV/parquet with a ``text`` column) -> ``text, intent, confidence``."""
        from apps.chatbot import nlu
        from common import batch as batch_lib

        with nlu.Parser(model) as parser:

            def score(chunk: pd.DataFrame) -> pd.DataFrame:
                if "text" not in chunk.columns:
                    raise DataError(f"{source}: no 'text' column (found {list(chunk.columns)})")
                texts = chunk["text"].fillna("").astype(str).tolist()
                preds = parser.parse(texts)
                return pd.DataFrame(
                    {
                        "text": texts,
                        "intent": [p.get("intent") for p in preds],
                        "confidence": [p.get("confidence") for p in preds],
                    }
                )

            res = batch_lib.score_file(source, output, score, chunksize=chunksize)
        return {"rows": res.rows, "output": str(res.output)}

    def monitor(
        self,
        ws: Workspace,
        model: Path,
        version: registry.ModelVersion,
        recent: Path | None,
        out: Path,
        *,
        days: float | None = None,
        low_confidence: float = 0.6,
        max_fallback_rate: float = 0.15,
        max_handoff_rate: float = 0.2,
    ) -> Monitoring:
        """Intent drift against the training intent mix, fallback and handoff rates, low-confidence messages to
        label (``low_confidence.csv``), from a tracker store or a file of recent messages."""
        result = lifecycle.monitor(
            model.parent,
            Path(recent) if recent is not None else lifecycle.tracker_db(ws),
            out,
            days=days,
            low_confidence=low_confidence,
            max_fallback_rate=max_fallback_rate,
            max_handoff_rate=max_handoff_rate,
        )
        stats = {k: v for k, v in result.to_dict().items() if k not in ("alerts", "report")}
        # the statistics also stay at the top level of monitor's JSON, where scripts have read them
        return Monitoring(alerts=result.alerts, stats=stats, report=result.report, extra=dict(stats))

    def retrain(self, ws: Workspace, dataset: str | None, cfg: Config, *, margin: float) -> dict[str, Any]:
        """Newly labelled messages -> a challenger, promoted only if every test story passes and its held-out NLU
        accuracy is at least the champion's (+ ``margin``)."""
        if dataset is None:
            raise UserError("retrain needs --dataset: newly labelled messages (CSV text,intent)")
        return lifecycle.retrain(
            Path(dataset),
            cfg,
            margin=margin,
            text_column=cfg.text_column,
            intent_column=cfg.intent_column,
            ws=ws,
        )

    def demo_config(self, seed: int) -> Config:
        """Few epochs, no cross-validation."""
        return Config(quick=True, seed=seed)

    def demo(self, ws: Workspace, cfg: Config) -> dict[str, Any]:
        from apps.chatbot.demo import run_demo

        return run_demo(self, ws, cfg)

    def tiny(self) -> Tiny:
        """The project's own data (a Rasa assistant needs its whole domain) with the fewest epochs that keep every
        test story passing, no cross-validation and a fixed classifier C; recent data: held-out messages."""

        def recent(directory: Path) -> Path:
            held_out = read_rasa_nlu(holdout_file()).head(12)
            path = directory / "messages.csv"
            held_out.assign(sender_id=[f"tiny-{i % 3}" for i in range(len(held_out))])[["sender_id", "text"]].to_csv(
                path, index=False
            )
            return path

        values = {"response_selector_epochs": 15, "ted_epochs": 0, "cv_folds": 0, "classifier_c": 1.0, "seed": 0}
        return Tiny(None, values, recent)


def handoff_log(ws: Workspace) -> Path:
    """Where the action server writes handoff summaries: ``MLREF_HANDOFF_LOG`` when the user set it, else beside
    the tracker store."""
    return Path(os.environ.get("MLREF_HANDOFF_LOG") or lifecycle.tracker_db(ws).with_name("handoffs.jsonl"))


def _check_bind(host: str, port: int) -> None:
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --host/--port") from None


class _Stopped(BaseException):
    """SIGTERM: leave the `with` block of `serve` (which stops the servers) and exit 0."""


def _stop_on_sigterm(*_: object) -> None:
    raise _Stopped


APP_IMPL = ChatbotApp()
__all__ = ["APP_IMPL", "MODEL_FILE", "ChatData", "ChatbotApp"]
