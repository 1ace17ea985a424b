"""``python -m apps.chatbot <command>``: the Mlref Shop's Rasa assistant, trained, tested, served, monitored, retrained.

This process runs in the main environment; Rasa 3.6 runs in ``.venv-chatbot`` (``make setup-chatbot``) as
subprocesses and servers. The assistant is the Rasa project in ``apps/chatbot/project`` (YAML training data, test
stories, custom actions); ``retrain --dataset`` and ``nlu-bench`` take CSVs of labelled messages (``text,intent``).
The commands and options follow the contract in ``common/cli.py``.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer

from apps.chatbot.config import APP, REGISTRY_NAME, Config
from common import cli

app = cli.create_app(APP, REGISTRY_NAME, __doc__)
TEXT_COLUMN = typer.Option("text", "--text-column", help="CSV column with the message text")
INTENT_COLUMN = typer.Option("intent", "--intent-column", help="CSV column with the intent (Banking77: category)")


def _config(config: Path | None, seed: int | None = None, *, quick: bool = False) -> Config:
    cfg = Config.from_file(config) if config else (Config.quick() if quick else Config())
    if seed is not None:
        cfg.seed = seed
    return cfg


@app.command()
def demo(seed: int = typer.Option(42, "--seed")) -> None:
    """Train (few epochs), run the test stories, serve, hold a scripted REST conversation, monitor; stop the
    servers. Offline, in $MLREF_HOME/demo/chatbot (your registry untouched)."""
    from apps.chatbot.demo import run_demo

    with cli.demo_home(APP) as home:
        summary = run_demo(seed=seed)
    cli.echo_json(summary)
    typer.echo(f"demo home: {home} (your own registry is untouched). Model card: {summary['model_card']}", err=True)


@app.command()
def train(
    dataset: Path | None = typer.Option(
        None, "--dataset", "-d", help="extra labelled messages (CSV text,intent) added to the project's training data"
    ),
    config: Path | None = cli.CONFIG,
    tune: int = cli.TUNE,
    promote: bool | None = cli.PROMOTE,
    seed: int | None = cli.SEED,
    quick: bool = typer.Option(False, "--quick", help="few epochs, no cross-validation (demo/tests)"),
    text_column: str = TEXT_COLUMN,
    intent_column: str = INTENT_COLUMN,
) -> None:
    """Validate the data, train, run the end-to-end test stories and the held-out NLU test, cross-validate,
    register the model archive (champion if none yet). Refuses to register when a test story fails."""
    from apps.chatbot import lifecycle
    from apps.chatbot.data import read_labelled

    if tune:
        typer.echo(
            "note: --tune is not used by the chatbot (the intent classifier has one setting, classifier_c in --config)",
            err=True,
        )
    cfg = _config(config, seed, quick=quick)
    extra = read_labelled(dataset, text_column=text_column, intent_column=intent_column) if dataset else None
    trained = lifecycle.build(cfg, extra=extra)
    if not trained.stories["all_passed"]:
        raise cli.fail(
            f"{trained.stories['total'] - trained.stories['passed']} test stories failed "
            f"({trained.stories['failed']}); see {trained.workdir / 'results'}. Not registered."
        )
    mv = lifecycle.register(
        trained, cfg, dataset=str(dataset) if dataset else "project", alias=cli.choose_alias(REGISTRY_NAME, promote)
    )
    cli.echo_json(
        {"version": mv.version, "aliases": mv.aliases, "metrics": trained.metrics(), "workdir": str(trained.workdir)}
    )
    typer.echo(cli.train_summary(REGISTRY_NAME, APP, mv.version), err=True)


@app.command()
def evaluate(
    dataset: Path | None = typer.Option(
        None,
        "--dataset",
        "-d",
        help="labelled messages (CSV text,intent; default: the held-out set tests/nlu_holdout.yml)",
    ),
    config: Path | None = cli.CONFIG,
    seed: int | None = cli.SEED,
    ref: str = cli.REF,
    text_column: str = TEXT_COLUMN,
    intent_column: str = INTENT_COLUMN,
) -> None:
    """The registered model (champion or --ref) on labelled messages vs the majority-intent baseline."""
    from apps.chatbot import lifecycle, nlu
    from apps.chatbot.data import holdout_file, read_labelled, read_rasa_nlu, training_messages
    from common import reports

    cfg = _config(config, seed)
    model, mv = lifecycle.model_path(ref)
    df = (
        read_labelled(dataset, text_column=text_column, intent_column=intent_column)
        if dataset
        else read_rasa_nlu(holdout_file())
    )
    with nlu.Parser(model, cfg) as parser:
        scores, preds = nlu.score_frame(parser, df)
    top = training_messages()["intent"].str.split("/").str[0].value_counts().index[0]
    baseline = nlu.intent_scores([i.split("/")[0] for i in df["intent"]], [top] * len(df))
    out = reports.new_report_dir(APP, str(dataset) if dataset else "holdout")
    reports.write_text(out / "predictions.csv", preds.to_csv(index=False))
    path = reports.write_report(
        out,
        title=f"{REGISTRY_NAME} v{mv.version}: intents on {dataset or 'the held-out set'}",
        metrics={f"v{mv.version}": scores, "majority intent": baseline},
        baselines=["majority intent"],
        higher_is_better={"accuracy": True, "macro_f1": True},
    )
    cli.echo_json({"version": mv.version, "report": str(path), "metrics": {"model": scores, "majority": baseline}})


NO_MODEL_YET = (
    "no chatbot model is registered yet: run `python -m apps.chatbot train` first (or `python -m apps.chatbot demo`, "
    "which trains and serves one in its own home)"
)


def _served_model(ref: str) -> tuple[Path, object]:
    """The model archive to serve; before any training, a one-line hint to train first."""
    from apps.chatbot import lifecycle
    from common import registry

    if ref == registry.CHAMPION and registry.version_of(REGISTRY_NAME, registry.CHAMPION) is None:
        raise cli.fail(NO_MODEL_YET)
    return lifecycle.model_path(ref)


def _check_bind(host: str, port: int) -> None:
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as exc:
        raise cli.fail(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --host/--port") from None


@app.command()
def serve(
    host: str | None = cli.HOST,
    port: int | None = cli.PORT,
    rasa_port: int | None = typer.Option(None, "--rasa-port", help="Rasa's port on 127.0.0.1 (default 5005)"),
    actions_port: int | None = typer.Option(
        None, "--actions-port", help="the action server's port on 127.0.0.1 (default 5055)"
    ),
    ref: str = cli.REF,
    config: Path | None = cli.CONFIG,
    refresh_s: float = typer.Option(
        10.0,
        "--refresh-s",
        min=0.0,
        help="check the registry this often; load a new champion without restart (0: never)",
    ),
) -> None:
    """Serve the champion behind the gateway (POST /v1/messages, /healthz, /readyz, /metrics, /docs on
    --host:--port, default 127.0.0.1:8000). Rasa and the action server listen on 127.0.0.1 only, each behind a
    token made for this run; a SQLite tracker store in $MLREF_HOME/chatbot/tracker.db. Ctrl-C (or SIGTERM) stops
    all three."""
    import contextlib
    import os

    from apps.chatbot import identity, lifecycle, rasa_env, service
    from common import registry, serving
    from common.config import get_settings

    cfg = _config(config)
    model, mv = _served_model(ref)
    try:
        secret = identity.secret_from_env()
    except ValueError as exc:
        raise cli.fail(str(exc)) from None
    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    _check_bind(host, port)
    # a handoff log the user chose is kept; the default sits beside the tracker store
    handoff_log = Path(os.environ.get("MLREF_HANDOFF_LOG") or lifecycle.tracker_db().with_name("handoffs.jsonl"))
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # while loading; uvicorn handles it while serving, then re-raises
    run_dir = lifecycle.workdir("serve")
    try:
        with rasa_env.servers(
            model,
            run_dir,
            cfg,
            tracker_db=lifecycle.tracker_db(),
            rasa_port=rasa_port or cfg.rasa_port,
            actions_port=actions_port,
            handoff_log=handoff_log,
        ) as srv:
            upstream = service.Upstream(srv.url, srv.token, cfg.upstream_timeout_s, model)
            gateway = service.build_app(
                upstream,
                mv,
                refresh_interval_s=refresh_s if refresh_s and ref == registry.CHAMPION else None,
                secret=secret,
            )
            typer.echo(
                f"chatbot v{mv.version}: POST http://{host}:{port}/v1/messages (docs: /docs); Rasa on {srv.url} and "
                f"actions on {srv.actions_url}, loopback only; loaded in {srv.load_s:.0f} s; logs in {run_dir}. "
                "Ctrl-C stops.",
                err=True,
            )
            with contextlib.suppress(_Stopped):
                serving.serve(gateway, host, port, log_level="warning")
            typer.echo("stopping the servers", err=True)
    except (KeyboardInterrupt, _Stopped):  # stopped while loading: the `with` block stopped both servers
        typer.echo("stopped the servers", err=True)


class _Stopped(BaseException):
    """SIGTERM: leave the `with` block of `serve` (which stops the servers) and exit 0."""


def _stop_on_sigterm(*_: object) -> None:
    raise _Stopped


@app.command()
def token(
    customer: str = typer.Argument(..., help="the customer id the conversation acts for, e.g. alice"),
    ttl_s: float = typer.Option(3600.0, "--ttl-s", min=1.0, help="seconds the token is valid"),
) -> None:
    """A signed customer token (header X-Customer-Token) for a gateway that has the same MLREF_CHATBOT_SECRET."""
    from apps.chatbot import identity

    try:
        secret = identity.secret_from_env()
        if secret is None:
            raise ValueError(f"{identity.SECRET_ENV} is not set: tokens are signed with the gateway's secret")
        value = identity.mint_token(customer, secret, ttl_s=ttl_s)
    except ValueError as exc:
        raise cli.fail(str(exc)) from None
    cli.echo_json({"customer": customer, "token": value, "ttl_s": ttl_s, "header": identity.TOKEN_HEADER})


@app.command()
def chat(
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="a running `serve` (its gateway)"),
    sender: str = typer.Option("terminal", "--sender", help="the conversation id"),
    customer: str | None = typer.Option(
        None, "--customer", help="talk as this customer (needs MLREF_CHATBOT_SECRET; demo customers: alice, bob)"
    ),
) -> None:
    """A terminal client for a running assistant (POST /v1/messages; X-API-Key from MLREF_API_KEY). Type /quit
    to leave."""
    import httpx

    from apps.chatbot import identity
    from apps.chatbot.service import customer_lines, say

    customer_token = None
    if customer:
        try:
            secret = identity.secret_from_env()
            if secret is None:
                raise ValueError(f"--customer needs {identity.SECRET_ENV} (the gateway's secret) to sign a token")
            customer_token = identity.mint_token(customer, secret)
        except ValueError as exc:
            raise cli.fail(str(exc)) from None
    typer.echo(f"talking to {url} as {customer or 'an anonymous customer'}; /quit to leave", err=True)
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if text in ("/quit", "/exit"):
            break
        if not text:
            continue
        try:
            for line in customer_lines(say(url, sender, text, token=customer_token)):
                typer.echo("bot> " + line)
        except httpx.HTTPStatusError as exc:
            try:
                detail = exc.response.json().get("message") or exc.response.json().get("detail")
            except ValueError:
                detail = exc.response.text[:200]
            typer.echo(f"refused ({exc.response.status_code}): {detail}", err=True)
        except httpx.HTTPError as exc:
            raise cli.fail(f"no answer from {url}: {exc} (is `python -m apps.chatbot serve` running?)") from None


@app.command()
def predict(
    text: str = typer.Argument(..., help="a user message, e.g. 'where is my order SH12345?'"), ref: str = cli.REF
) -> None:
    """Intent, confidence and entities of one message (champion or --ref)."""
    from apps.chatbot import lifecycle, nlu

    if not text.strip():
        raise cli.fail("TEXT: empty message")
    model, mv = lifecycle.model_path(ref)
    with nlu.Parser(model) as parser:
        result = parser.parse([text])[0]
    cli.echo_json({"version": mv.version, **result})


@app.command()
def batch(
    input_path: Path = typer.Option(
        ..., "--input", "-i", help="messages to classify (CSV/parquet with a 'text' column)"
    ),
    output: Path = cli.OUTPUT_FILE,
    ref: str = cli.REF,
    chunksize: int = cli.CHUNKSIZE,
) -> None:
    """Classify a file of messages with the champion: ``text, intent, confidence`` (chunked; written atomically)."""
    import pandas as pd

    from apps.chatbot import lifecycle, nlu
    from common import batch as batch_lib
    from common.data import DataError

    model, mv = lifecycle.model_path(ref)
    with nlu.Parser(model) as parser:

        def score(chunk: pd.DataFrame) -> pd.DataFrame:
            if "text" not in chunk.columns:
                raise DataError(f"{input_path}: no 'text' column (found {list(chunk.columns)})")
            texts = chunk["text"].fillna("").astype(str).tolist()
            preds = parser.parse(texts)
            return pd.DataFrame(
                {
                    "text": texts,
                    "intent": [p.get("intent") for p in preds],
                    "confidence": [p.get("confidence") for p in preds],
                }
            )

        res = batch_lib.score_file(input_path, output, score, chunksize=chunksize)
    cli.echo_json({"version": mv.version, "rows": res.rows, "output": str(res.output)})


@app.command()
def monitor(
    dataset: Path | None = typer.Option(
        None, "--dataset", "-d", help="a Rasa SQLite tracker store (default: the one `serve` writes)"
    ),
    days: float | None = typer.Option(None, "--days", min=0.0, help="only the last N days"),
    ref: str = cli.REF,
    low_confidence: float = typer.Option(
        0.6, "--low-confidence", min=0.0, max=1.0, help="export messages whose best intent is below this"
    ),
    max_fallback_rate: float = typer.Option(0.15, "--max-fallback-rate", min=0.0, max=1.0),
    max_handoff_rate: float = typer.Option(0.2, "--max-handoff-rate", min=0.0, max=1.0),
) -> None:
    """Intent drift, fallback and handoff rates from the tracker store; low-confidence messages -> CSV for
    labelling (then `retrain --dataset` it). Exit 1 on an alert."""
    from apps.chatbot import lifecycle
    from common import registry, reports

    mv = registry.get(REGISTRY_NAME, ref)
    db = dataset or lifecycle.tracker_db()
    out = reports.new_report_dir(APP, "tracker", kind="monitor")
    result = lifecycle.monitor(
        registry.fetch_model_dir(mv),
        db,
        out,
        days=days,
        low_confidence=low_confidence,
        max_fallback_rate=max_fallback_rate,
        max_handoff_rate=max_handoff_rate,
    )
    cli.echo_json({"version": mv.version, **result.to_dict()})
    cli.exit_monitor(bool(result.alerts))


@app.command()
def retrain(
    dataset: Path = typer.Option(..., "--dataset", "-d", help="newly labelled messages (CSV text,intent)"),
    config: Path | None = cli.CONFIG,
    margin: float = cli.MARGIN,
    quick: bool = typer.Option(False, "--quick", help="few epochs, no cross-validation"),
    text_column: str = TEXT_COLUMN,
    intent_column: str = INTENT_COLUMN,
) -> None:
    """Add labelled messages, train a challenger; promote it only if every test story passes and its held-out NLU
    accuracy is at least the champion's (+ --margin)."""
    from apps.chatbot import lifecycle

    cli.echo_json(
        lifecycle.retrain(
            dataset, _config(config, quick=quick), margin=margin, text_column=text_column, intent_column=intent_column
        )
    )


@app.command(name="nlu-bench")
def nlu_bench(
    train_csv: Path = typer.Option(..., "--train", help="training messages (CSV)"),
    test_csv: Path = typer.Option(..., "--test", help="test messages (CSV)"),
    text_column: str = TEXT_COLUMN,
    intent_column: str = INTENT_COLUMN,
    name: str | None = typer.Option(
        None, "--name", help="dataset name in the results (default: the training file's folder)"
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="results JSON (default bench/results/chatbot-nlu-<name>.json)"
    ),
    config: Path | None = cli.CONFIG,
    oos_intents: int = typer.Option(
        0, "--oos-intents", min=0, help="hold out this many training intents as unseen (out of scope, seeded)"
    ),
    seed: int | None = cli.SEED,
) -> None:
    """Train the app's NLU pipeline on any intent dataset and report accuracy, macro-F1, training seconds, peak
    memory -> bench/results/; with out-of-scope test messages (``oos`` rows or --oos-intents) also out-of-scope
    recall and precision -> bench/results/chatbot-oos-<name>.json."""
    from apps.chatbot.bench import run_nlu_bench

    cfg = _config(config, seed)
    cli.echo_json(
        run_nlu_bench(
            train_csv,
            test_csv,
            cfg,
            text_column=text_column,
            intent_column=intent_column,
            name=name,
            output=output,
            oos_intents=oos_intents,
        )
    )


@app.command()
def bench(
    dataset: Path | None = typer.Option(
        None, "--dataset", "-d", help="a folder with train.csv and test.csv (default: $MLREF_DATA_DIR/banking77)"
    ),
    output: Path | None = typer.Option(None, "--output", "-o"),
    intent_column: str = typer.Option("category", "--intent-column"),
    latency_requests: int = typer.Option(200, "--latency-requests", min=10),
    nlu_from: Path | None = typer.Option(
        None,
        "--nlu-from",
        help="take the NLU results from this earlier nlu-bench JSON instead of training again (8 minutes saved)",
    ),
) -> None:
    """NLU accuracy/macro-F1/training time on Banking77 (or --dataset), plus the REST webhook latency and model
    load time of the assistant -> bench/results/chatbot.json."""
    from apps.chatbot.bench import run_bench

    cli.echo_json(
        run_bench(
            dataset,
            output=output,
            intent_column=intent_column,
            latency_requests=latency_requests,
            nlu_from=nlu_from,
        )
    )


def main() -> None:  # pragma: no cover
    cli.run(app)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
