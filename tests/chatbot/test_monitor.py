"""Monitoring from Rasa's SQLite tracker store (the schema of rasa.core.tracker_store.SQLTrackerStore), and the
labelled-message CSVs that feed nlu-bench and retrain. No Rasa process needed."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from apps.chatbot.__main__ import app
from apps.chatbot.data import read_labelled, read_rasa_nlu, to_rasa_nlu
from apps.chatbot.lifecycle import REFERENCE, read_tracker
from common import monitoring, registry
from common.data import DataError

runner = CliRunner()
SCHEMA = (
    "CREATE TABLE events (id INTEGER PRIMARY KEY, sender_id VARCHAR(255) NOT NULL, type_name VARCHAR(255) "
    "NOT NULL, timestamp FLOAT, intent_name VARCHAR(255), action_name VARCHAR(255), data TEXT)"
)


def make_tracker(path: Path, conversations: list[list[tuple]], *, age_days: float = 0.0) -> Path:
    """Conversations of ("user", text, intent, confidence), ("action", name) and ("bot", custom payload[, metadata])
    steps ->
    a tracker store."""
    con = sqlite3.connect(path)
    con.execute(SCHEMA)
    t = time.time() - age_days * 86400
    for n, steps in enumerate(conversations):
        sender = f"user-{n}"
        for step in steps:
            t += 1
            if step[0] == "user":
                _, text, intent, conf = step
                ranking = [{"name": intent, "confidence": conf}]
                if intent == "nlu_fallback":
                    ranking = [{"name": "nlu_fallback", "confidence": 0.4}, {"name": "greet", "confidence": conf}]
                data = {
                    "event": "user",
                    "timestamp": t,
                    "text": text,
                    "parse_data": {"intent": ranking[0], "intent_ranking": ranking, "entities": [], "text": text},
                }
                con.execute(
                    "INSERT INTO events (sender_id, type_name, timestamp, intent_name, data) VALUES "
                    "(?, 'user', ?, ?, ?)",
                    (sender, t, intent, json.dumps(data)),
                )
            elif step[0] == "bot":  # a bot message with a custom payload (and metadata)
                data = {"event": "bot", "timestamp": t, "text": "passing you on", "data": {"custom": step[1]}}
                if len(step) > 2:
                    data["metadata"] = step[2]
                con.execute(
                    "INSERT INTO events (sender_id, type_name, timestamp, data) VALUES (?, 'bot', ?, ?)",
                    (sender, t, json.dumps(data)),
                )
            else:
                data = {"event": "action", "timestamp": t, "name": step[1]}
                con.execute(
                    "INSERT INTO events (sender_id, type_name, timestamp, action_name, data) VALUES "
                    "(?, 'action', ?, ?, ?)",
                    (sender, t, step[1], json.dumps(data)),
                )
    con.commit()
    con.close()
    return path


def register_reference(tmp_path: Path, intents: list[str]) -> registry.ModelVersion:
    d = tmp_path / "model"
    d.mkdir()
    (d / "model.tar.gz").write_bytes(b"not a real model: monitor reads reference.json only")
    ref = pd.DataFrame({"intent": intents})
    monitoring.ReferenceProfile.from_frame(ref, categorical=["intent"], top_n=50).save(d / REFERENCE)
    return registry.register("chatbot", d, alias=registry.CHAMPION)


TRAINING_MIX = ["greet"] * 30 + ["order_status"] * 30 + ["faq"] * 30 + ["thank"] * 30


def steady(n: int) -> list[list[tuple]]:
    return [
        [
            ("user", "hi", "greet", 0.95),
            ("action", "utter_greet"),
            ("user", "where is my order", "order_status", 0.9),
            ("action", "order_status_form"),
            ("user", "how long is delivery", "faq", 0.92),
            ("action", "utter_faq"),
            ("user", "thanks", "thank", 0.97),
            ("action", "utter_you_are_welcome"),
        ]
        for _ in range(n)
    ]


def test_a_steady_assistant_raises_no_alert(tmp_path: Path) -> None:
    register_reference(tmp_path, TRAINING_MIX)
    db = make_tracker(tmp_path / "tracker.db", steady(40))
    r = runner.invoke(app, ["monitor", "--dataset", str(db)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["messages"] == 160 and out["conversations"] == 40
    assert out["fallback_rate"] == 0.0 and out["handoff_rate"] == 0.0 and out["alerts"] == []
    assert Path(out["report"]).exists()


def test_fallbacks_handoffs_and_drift_alert_and_low_confidence_is_exported(tmp_path: Path) -> None:
    register_reference(tmp_path, TRAINING_MIX)
    convs = [
        [
            ("user", "blorp wug", "nlu_fallback", 0.2),
            ("action", "action_two_stage_fallback"),
            ("user", "zzz qqq", "nlu_fallback", 0.1),
            ("action", "action_two_stage_fallback"),
            # the two-stage fallback gives up by running action_default_fallback inside itself: no action event,
            # only the bot message: marked with the handoff's reference (the summary is in the handoff log only);
            # conversations stored before that carry the summary as a custom payload
            ("bot", None, {"handoff": "H-ABC234"}) if n % 2 else ("bot", {"handoff": {"turns": 2}}),
        ]
        for n in range(15)
    ]
    convs += [
        [
            ("user", "is this charge real", "dispute_charge", 0.55),
            ("action", "action_check_charge"),
            ("user", "a human please", "human_handoff", 0.9),
            ("action", "action_handoff"),
        ]
        for _ in range(25)
    ]
    db = make_tracker(tmp_path / "tracker.db", convs)
    r = runner.invoke(app, ["monitor", "--dataset", str(db), "--low-confidence", "0.6"])
    assert r.exit_code == 1, r.output  # an alert, not a crash
    out = json.loads(r.stdout)
    assert out["fallback_rate"] == pytest.approx(30 / 80)
    assert out["handoff_rate"] == 1.0  # every conversation ended with a human
    assert out["intent_drift"] is True
    assert any(a.startswith("fallback rate 37.5% > 15%") for a in out["alerts"])
    low = pd.read_csv(out["low_confidence_csv"])
    assert len(low) == 30 + 25  # the fallbacks and the 0.55 charge questions
    assert list(low.columns[:2]) == ["text", "intent"]  # the format retrain --dataset takes, once corrected
    assert set(low.loc[low["text"] == "is this charge real", "intent"]) == {"dispute_charge"}


def test_messages_rejected_as_out_of_scope_count_as_not_understood(tmp_path: Path) -> None:
    """The classifier's calibrated threshold turns a message into out_of_scope (its parse data says rejected): the
    monitor counts it with the fallbacks and exports it for labelling; the out_of_scope class itself is not."""
    register_reference(tmp_path, TRAINING_MIX + ["out_of_scope"] * 10)
    db = make_tracker(
        tmp_path / "tracker.db",
        steady(8) + [[("user", "blorp fizzle wug", "out_of_scope", 0.8), ("action", "utter_out_of_scope")]] * 2,
    )
    db2 = make_tracker(tmp_path / "class.db", steady(8) + [[("user", "book a flight", "out_of_scope", 0.9)]] * 2)
    with sqlite3.connect(db) as con:
        for row_id, data in con.execute("SELECT id, data FROM events WHERE intent_name='out_of_scope'").fetchall():
            event = json.loads(data)
            event["parse_data"]["out_of_scope"] = {"rejected": True, "score": 0.3, "closed_set_intent": "deny"}
            con.execute("UPDATE events SET data=? WHERE id=?", (json.dumps(event), row_id))
    messages, _ = read_tracker(db)
    assert messages["rejected"].sum() == 2 and not read_tracker(db2)[0]["rejected"].any()
    out = json.loads(runner.invoke(app, ["monitor", "--dataset", str(db)]).stdout)
    assert out["fallback_rate"] == pytest.approx(2 / 34) and out["low_confidence"] == 2
    assert json.loads(runner.invoke(app, ["monitor", "--dataset", str(db2)]).stdout)["fallback_rate"] == 0.0


def test_days_window_and_errors(tmp_path: Path) -> None:
    register_reference(tmp_path, TRAINING_MIX)
    db = make_tracker(tmp_path / "old.db", steady(5), age_days=10)
    r = runner.invoke(app, ["monitor", "--dataset", str(db), "--days", "1"])
    assert r.exit_code != 0 and "no user messages in the last 1 days" in str(r.exception)
    messages, actions = read_tracker(db, days=30)
    assert len(messages) == 20 and len(actions) == 20
    with pytest.raises(DataError, match="no tracker store"):
        read_tracker(tmp_path / "missing.db")
    (tmp_path / "junk.db").write_text("this is not sqlite")
    with pytest.raises(DataError, match="not a Rasa SQLite tracker store"):
        read_tracker(tmp_path / "junk.db")


# ------------------------------------------------------------------------------------------- labelled messages
def test_labelled_csv_with_another_column_name_round_trips_through_rasa_yaml(tmp_path: Path) -> None:
    csv = tmp_path / "b77.csv"
    csv.write_text(
        'text,category\n"How do I locate my card?",card_arrival\n'
        '"my card [the blue one] is lost",lost_card\n"  spaced   out ",card_arrival\n'
    )
    df = read_labelled(csv, intent_column="category")
    assert df["text"].tolist() == ["How do I locate my card?", "my card [the blue one] is lost", "spaced out"]
    back = read_rasa_nlu(to_rasa_nlu(df, tmp_path / "nlu.yml"))
    assert sorted(back["intent"]) == ["card_arrival", "card_arrival", "lost_card"]
    assert "my card (the blue one) is lost" in set(back["text"])  # no accidental entity annotation


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,category\nhi,greet\n", "missing column(s) ['intent']"),
        ("text,intent\n,greet\n", "row 2: empty 'text'"),
        ("text,intent\nhello,\n", "row 2: empty 'intent'"),
        ("text,intent\nhello,greet me\n", "intent names may only use letters"),
        ("text,intent\n" + "x" * 1001 + ",greet\n", "longer than 1000 characters"),
        ("", "not a readable CSV"),
    ],
)
def test_bad_labelled_csv_is_a_one_line_user_error(tmp_path: Path, content: str, message: str) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    with pytest.raises(DataError) as err:
        read_labelled(csv)
    assert message in str(err.value) and str(csv) in str(err.value)
