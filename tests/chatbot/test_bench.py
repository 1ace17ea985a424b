"""The issue's NLU target on the real Banking77 (``make bench``; needs ../shared/data/banking77): >= 93 % accuracy,
training under 20 minutes and under 2 GB."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.chatbot.bench import MODEL_NAME, run_nlu_bench
from apps.chatbot.config import Config
from tests.chatbot.conftest import require_rasa


@pytest.mark.bench
def test_banking77_target(shared_data: Path, tmp_path: Path) -> None:
    require_rasa()
    folder = shared_data / "banking77"
    doc = run_nlu_bench(
        folder / "train.csv",
        folder / "test.csv",
        Config(),
        intent_column="category",
        name="banking77",
        output=tmp_path / "b77.json",
    )
    model = doc["models"][MODEL_NAME]
    assert model["n_train"] == 10003 and model["n_test"] == 3080
    assert model["metrics"]["accuracy"] >= 0.93, model
    assert model["train_s"] < 20 * 60 and model["peak_rss_mb"] < 2048, model
