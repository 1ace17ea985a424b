"""``python -m apps.chatbot <command>``: the Mlref Shop's Rasa assistant, trained, tested, served, monitored, retrained.

This process runs in the main environment; Rasa 3.6 runs in ``.venv-chatbot`` (``make setup-chatbot``) as
subprocesses and servers. The assistant is the Rasa project in ``apps/chatbot/project`` (YAML training data, test
stories, custom actions); ``train``/``retrain --dataset`` and ``nlu-bench`` take CSVs of labelled messages
(``text,intent``). The standard commands come from the app's pipeline (``pipeline.py``) through
:func:`common.app.build_cli`; ``serve`` and ``monitor`` take the chatbot's own options (Rasa's ports, the tracker
store, declared as ``App.options`` in pipeline.py), and ``token``, ``chat``, ``predict``, ``nlu-bench`` and
``bench`` are the chatbot's own commands.
"""

from __future__ import annotations

from pathlib import Path

import typer

from apps.chatbot.config import Config
from apps.chatbot.pipeline import APP_IMPL
from common import cli
from common.app import build_cli
from common.workspace import Workspace

app = build_cli(APP_IMPL)
TEXT_COLUMN = typer.Option("text", "--text-column", help="CSV column with the message text")
INTENT_COLUMN = typer.Option("intent", "--intent-column", help="CSV column with the intent (Banking77: category)")


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
    from apps.chatbot.service import chat as chat_with

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
    try:
        chat_with(url, sender, token=customer_token, show=typer.echo, warn=lambda line: typer.echo(line, err=True))
    except httpx.HTTPError as exc:
        raise cli.fail(f"no answer from {url}: {exc} (is `python -m apps.chatbot serve` running?)") from None


@app.command()
def predict(
    text: str = typer.Argument(..., help="a user message, e.g. 'where is my order SH12345?'"), ref: str = cli.REF
) -> None:
    """Intent, confidence and entities of one message (champion or --ref)."""
    from apps.chatbot import nlu

    if not text.strip():
        raise cli.fail("TEXT: empty message")
    ws = Workspace.from_env()
    with ws.activate():
        model, mv = APP_IMPL.load_model(ws, ref)
        with nlu.Parser(model) as parser:
            result = parser.parse([text])[0]
    cli.echo_json({"version": mv.version, **result})


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

    cfg = Config.from_file(config)
    if seed is not None:
        cfg.seed = seed
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
    main()
