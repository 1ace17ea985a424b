"""The Rasa project itself: data validation, the end-to-end test stories, held-out NLU, and the registered archive.

One model is trained per session (``trained`` fixture, quick config); the tests read what that run produced.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from apps.chatbot import lifecycle, rasa_env
from apps.chatbot.config import MODEL_FILE, PROJECT, Config
from common import registry
from tests.chatbot.conftest import require_rasa

# What `rasa data validate` 3.6.21 still says about a correct project: the form's question (asked implicitly by
# the form, which the validator does not see) and the retrieval intents, which it counts twice.
KNOWN_VALIDATOR_NOISE = (
    "The utterance 'utter_ask_order_id' is not used in any story or rule",
    "The following duplicated intents have been found across multiple domain files: chitchat, faq",
)


def test_data_validates_cleanly_and_all_test_stories_pass(trained: lifecycle.Trained) -> None:
    # build() ran `rasa data validate --fail-on-warnings` first (it raises on an error); no warning beyond the known
    log = (trained.workdir / "logs" / "validate.log").read_text()
    warnings = [line.split("UserWarning: ", 1)[1].strip() for line in log.splitlines() if "UserWarning: " in line]
    unexpected = [w for w in warnings if not w.startswith(KNOWN_VALIDATOR_NOISE)]
    assert unexpected == [], unexpected
    stories = yaml.safe_load((PROJECT / "tests" / "test_stories.yml").read_text())["stories"]
    assert trained.stories["total"] == len(stories) >= 10
    assert trained.stories["all_passed"], trained.stories["failed"]
    covered = {s["story"].split(" - ")[0] for s in stories}
    assert {"happy path", "form correction", "form interruption", "low confidence"} <= covered
    assert any("handoff" in s["story"] for s in stories)


def test_held_out_nlu_accuracy(trained: lifecycle.Trained) -> None:
    """Messages never trained on, through the whole NLU pipeline (MiniLM + logistic regression)."""
    assert trained.holdout["n"] >= 50
    assert trained.holdout["accuracy"] >= 0.85, trained.holdout
    assert trained.holdout["macro_f1"] >= 0.8


def test_registered_version_is_the_rasa_archive_with_its_hash(trained: lifecycle.Trained, tmp_path: Path) -> None:
    mv = lifecycle.register(trained, Config(quick=True), dataset="project", alias=registry.CHAMPION)
    model, got = lifecycle.model_path()
    assert got.version == mv.version and model.name == MODEL_FILE
    assert mv.sha256 == registry.hash_dir(model.parent)
    with tarfile.open(model) as tar:  # a real Rasa archive
        assert any(n.endswith("metadata.json") for n in tar.getnames())
    evaluation = json.loads((model.parent / lifecycle.EVALUATION).read_text())
    assert evaluation["stories"]["all_passed"] is True
    card = (model.parent / "model_card.md").read_text()
    assert "End-to-end test stories" in card and "held-out NLU" in card
    # a flipped byte in the archive is caught before Rasa ever opens it
    with open(model, "r+b") as fh:
        fh.seek(100)
        b = fh.read(1)
        fh.seek(100)
        fh.write(bytes([b[0] ^ 1]))
    with pytest.raises(registry.IntegrityError):
        lifecycle.model_path()


def test_validation_rejects_a_story_with_an_unknown_action(tmp_path: Path) -> None:
    require_rasa()
    wd = rasa_env.prepare_workdir(tmp_path / "broken", Config(quick=True))
    rules = yaml.safe_load((wd / "data" / "rules.yml").read_text())
    rules["rules"][0]["steps"][1]["action"] = "utter_not_in_the_domain"
    (wd / "data" / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    with pytest.raises(rasa_env.RasaError, match="utter_not_in_the_domain"):
        rasa_env.validate_data(wd)
    shutil.rmtree(wd)
