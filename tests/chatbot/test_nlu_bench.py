"""``nlu-bench`` on a tiny intent CSV: the app's NLU pipeline trained in .venv-chatbot, scored on a test CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from apps.chatbot.__main__ import app
from tests.chatbot.conftest import require_rasa

runner = CliRunner()
TRAIN = {
    "card_arrival": [
        "my card has not arrived",
        "when will my new card come",
        "still waiting for my card",
        "the card you sent never showed up",
        "how long does card delivery take",
        "card not delivered yet",
    ],
    "exchange_rate": [
        "what exchange rate do you use",
        "how much is a dollar in euros",
        "currency conversion rate",
        "which rate applies when I pay abroad",
        "is your exchange rate fair",
        "euro to pound rate",
    ],
    "lost_card": [
        "I lost my card",
        "my card was stolen",
        "I can't find my card anywhere",
        "someone took my wallet",
        "block my lost card",
        "my card is missing",
    ],
    "top_up": [
        "how do I top up my account",
        "add money to my balance",
        "top up with a bank transfer",
        "can I top up by card",
        "put funds into my account",
        "my top up failed",
    ],
}
TEST = {
    "card_arrival": ["my card still isn't here", "where is the card you mailed me"],
    "exchange_rate": ["what rate do you convert currencies at", "how much will I get for 100 dollars"],
    "lost_card": ["I think I lost my bank card", "my card got stolen yesterday"],
    "top_up": ["how can I add money", "I want to top up my balance"],
}


def _csv(path: Path, data: dict[str, list[str]]) -> Path:
    pd.DataFrame([{"text": t, "category": i} for i, ts in data.items() for t in ts]).to_csv(path, index=False)
    return path


def test_nlu_bench_on_a_tiny_dataset_writes_its_results(tmp_path: Path) -> None:
    require_rasa()
    train, test = _csv(tmp_path / "train.csv", TRAIN), _csv(tmp_path / "test.csv", TEST)
    out = tmp_path / "results.json"
    r = runner.invoke(
        app,
        [
            "nlu-bench",
            "--train",
            str(train),
            "--test",
            str(test),
            "--intent-column",
            "category",
            "--name",
            "tiny-banking",
            "--output",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert json.loads(r.stdout)["output"] == str(out)
    model = doc["models"]["MiniLM-L6 sentence embeddings + logistic regression (Rasa NLU)"]
    assert model["n_train"] == 24 and model["n_test"] == 8
    assert model["metrics"]["accuracy"] >= 0.75  # 4 well-separated intents, sentence embeddings
    assert 0 < model["metrics"]["macro_f1"] <= 1 and model["train_s"] > 0 and model["peak_rss_mb"] > 100
    assert doc["app"] == "chatbot" and doc["dataset"] == "tiny-banking" and "accuracy" in doc["protocol"]


def test_nlu_bench_names_the_missing_column(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", TRAIN)
    r = runner.invoke(app, ["nlu-bench", "--train", str(train), "--test", str(train)])
    assert r.exit_code != 0
    assert "missing column(s) ['intent']" in str(r.exception) and "--intent-column" in str(r.exception)


def test_public_intent_names_rasa_cannot_use_are_renamed_for_benchmarks(tmp_path) -> None:
    from apps.chatbot.data import read_labelled
    from common.data import DataError

    csv = tmp_path / "b.csv"
    csv.write_text("text,category\nmy payment came back,reverted_card_payment?\nhello,greet\n")
    with pytest.raises(DataError, match=r"intent names may only use"):
        read_labelled(csv, intent_column="category")
    out = read_labelled(csv, intent_column="category", rename_intents=True)
    assert out["intent"].tolist() == ["reverted_card_payment_", "greet"]
    csv.write_text("text,category\na,x?\nb,x!\n")
    with pytest.raises(DataError, match="would merge two"):
        read_labelled(csv, intent_column="category", rename_intents=True)
