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


OOS_TEST = ["blorp fizzle wug", "what is the capital of France", "play some jazz music"]


def test_nlu_bench_oos_intents_holds_out_unseen_intents_and_reports_open_set_metrics(tmp_path: Path) -> None:
    require_rasa()
    train, test = _csv(tmp_path / "train.csv", TRAIN), _csv(tmp_path / "test.csv", {**TEST, "oos": OOS_TEST})
    out = tmp_path / "oos.json"
    args = ["nlu-bench", "--train", str(train), "--test", str(test), "--intent-column", "category"]
    r = runner.invoke(app, [*args, "--oos-intents", "1", "--seed", "3", "--output", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    oos = doc["out_of_scope"]
    assert len(oos["held_out_intents"]) == 1 and oos["held_out_intents"][0] in TRAIN and oos["seed"] == 3
    model = doc["models"]["MiniLM-L6 sentence embeddings + logistic regression (Rasa NLU)"]
    assert model["n_train"] == 18 and model["n_test"] == 11  # 3 intents trained; 2 + 3 out-of-scope test rows
    m = model["metrics"]
    assert set(m) >= {"in_scope_accuracy", "macro_f1", "oos_recall", "oos_precision", "closed_set_in_scope_accuracy"}
    assert oos["deployed"]["n_oos"] == 5 and oos["deployed"]["n_in_scope"] == 6
    assert oos["deployed"]["score"] == "class_knn_msp" and set(oos["scores"]) == {"msp", "knn_msp", "class_knn_msp"}
    assert oos["target"] == {"oos_recall": 0.8, "max_in_scope_accuracy_drop": 0.015}
    assert m["oos_recall"] >= 0.6  # gibberish and another domain are far from 3 banking intents
    assert m["closed_set_in_scope_accuracy"] >= 0.5 and m["in_scope_accuracy"] <= m["closed_set_in_scope_accuracy"]
    # the same seed holds out the same intent
    assert runner.invoke(app, [*args, "--oos-intents", "9"]).exit_code != 0


def test_hold_out_intents_is_seeded_and_relabels_the_test_messages() -> None:
    from apps.chatbot.bench import hold_out_intents
    from common.data import DataError

    train = pd.DataFrame([{"text": t, "intent": i} for i, ts in TRAIN.items() for t in ts])
    test = pd.DataFrame([{"text": t, "intent": i} for i, ts in TEST.items() for t in ts])
    tr, te, unseen = hold_out_intents(train, test, 2, seed=5)
    assert (tr, te, unseen)[2] == hold_out_intents(train, test, 2, seed=5)[2] and len(unseen) == 2
    assert not tr["intent"].isin(unseen).any() and len(tr) == 12
    assert (te["intent"] == "oos").sum() == 4 and set(te["intent"]) - {"oos"} == set(TEST) - set(unseen)
    with pytest.raises(DataError, match="--oos-intents must be between 1 and 2"):
        hold_out_intents(train, test, 3, seed=5)


def test_open_set_scores_count_rejections_as_the_out_of_scope_class() -> None:
    from apps.chatbot.nlu import open_set_scores, recall_trade_off

    truth = ["a", "a", "b", "b", "oos", "oos", "oos", "oos"]
    pred = ["a", "out_of_scope", "b", "a", "out_of_scope", "out_of_scope", "oos", "b"]
    closed = ["a", "a", "b", "a", "a", "b", "a", "b"]
    s = open_set_scores(truth, pred, closed)
    assert s["in_scope_accuracy"] == 0.5 and s["closed_set_in_scope_accuracy"] == 0.75
    assert s["oos_recall"] == 0.75 and s["oos_precision"] == 0.75 and s["rejected_in_scope"] == 0.25
    assert (s["n_in_scope"], s["n_oos"]) == (4, 4)
    # F1 per class: a 1/2 (precision 1/2: one b predicted a; recall 1/2: one a rejected), b 1/2, oos 3/4
    assert s["macro_f1"] == pytest.approx((1 / 2 + 1 / 2 + 3 / 4) / 3)
    assert s["in_scope_macro_f1"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    scores = [0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.3, 0.65]
    t = recall_trade_off(scores, truth, closed, 0.75)
    # the lowest threshold that rejects 3 of the 4 out-of-scope messages lies just above 0.3: every in-scope message
    # is kept, and the three the closed-set model got right stay right
    assert t["oos_recall"] == 0.75 and t["in_scope_accuracy"] == 0.75


def test_calibrated_threshold_costs_at_most_the_allowed_in_scope_accuracy() -> None:
    import numpy as np

    from apps.chatbot.project.components import openset

    rng = np.random.default_rng(0)
    scores, correct = rng.random(1000), rng.random(1000) < 0.9
    for drop in (0.0, 0.015, 0.1):
        t = openset.calibrate(scores, correct, drop)
        lost = (correct & (scores < t)).sum()
        assert lost <= np.floor(drop * 1000) and (correct & (scores <= t)).sum() > np.floor(drop * 1000)
    assert openset.calibrate(np.array([0.3, 0.2]), np.array([False, False]), 0.1) == float("-inf")
    with pytest.raises(ValueError, match="max_accuracy_drop"):
        openset.calibrate(scores, correct, 1.0)
    sims = openset.nearest_similarity(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[3.0, 0.0], [1.0, 1.0]]))
    assert sims == pytest.approx([1.0, 2**-0.5])
    s = openset.in_scope_scores(np.array([[0.7, 0.3]]), np.array([0.5]))
    assert s["msp"][0] == pytest.approx(0.7) and s["knn_msp"][0] == pytest.approx(0.5 + 0.5 * 0.7)
