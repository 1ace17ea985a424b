"""Intent predictions of a trained Rasa model from the main environment, through ``project/scripts/parse.py``.

:class:`Parser` keeps one Rasa process open (the model loads once) and streams messages through it as JSON lines;
``predict`` and ``batch`` use it, and ``nlu-bench`` scores a test CSV with it (:func:`open_set_scores` when some test
messages are out of scope).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from apps.chatbot import rasa_env
from apps.chatbot.config import PROJECT, Config, chatbot_venv

OOS_LABEL = "oos"  # a test CSV's label for out-of-scope messages (and the unseen intents of --oos-intents)
OOS_INTENT = "out_of_scope"  # what the intent classifier predicts for a message it rejects


class Parser:
    """``with Parser(model) as p: p.parse(["hi", ...])`` -> one dict per text (intent, confidence, entities...)."""

    def __init__(self, model: Path, cfg: Config | None = None, *, timeout_s: float = 900.0) -> None:
        rasa_env.rasa_executable()  # a clear error when the Rasa environment is missing
        # Rasa's chatter goes to a file: a pipe nobody reads could fill up and block the parser
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [str(chatbot_venv() / "bin" / "python"), str(PROJECT / "scripts" / "parse.py"), str(model)],
            cwd=PROJECT,
            env=rasa_env.subprocess_env(cfg),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )
        t0 = time.perf_counter()
        first = self._read()
        if not first.get("ready"):
            raise rasa_env.RasaError(f"parse.py did not start: {first}")
        self.load_s = time.perf_counter() - t0
        self.timeout_s = timeout_s

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.proc.wait(timeout=30)
            self.log.seek(0)
            err = self.log.read()[-3000:]
            raise rasa_env.RasaError(f"the Rasa parser exited ({self.proc.poll()}):\n{err}")
        return json.loads(line)

    def parse(self, texts: list[str]) -> list[dict[str, Any]]:
        out = []
        for text in texts:  # one at a time: the pipe never fills up, and a bad text fails alone
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"text": str(text)}) + "\n")
            self.proc.stdin.flush()
            out.append(self._read())
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()

    def __enter__(self) -> Parser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def intent_scores(y_true: list[str], y_pred: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the true intents (an intent never predicted has F1 0)."""
    from sklearn.metrics import f1_score

    y_true_a, y_pred_a = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    return {
        "accuracy": float(np.mean(y_true_a == y_pred_a)),
        "macro_f1": float(f1_score(y_true_a, y_pred_a, labels=sorted(set(y_true)), average="macro", zero_division=0)),
        "n": len(y_true),
    }


def score_frame(parser: Parser, df: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
    """Predict ``df.text`` and score against ``df.intent`` (retrieval intents compared on their base name)."""
    preds = parser.parse(df["text"].tolist())
    out = df.assign(
        predicted=[p.get("top_intent") or "" for p in preds],
        confidence=[p.get("top_confidence", 0.0) for p in preds],
        parse_ms=[p.get("parse_ms", float("nan")) for p in preds],
        out_of_scope=[p.get("out_of_scope") or {} for p in preds],
    )
    truth = [i.split("/")[0] for i in df["intent"]]
    return intent_scores(truth, out["predicted"].tolist()), out


def _rejected(predicted: np.ndarray) -> np.ndarray:
    return np.isin(predicted, [OOS_INTENT, OOS_LABEL])


def open_set_scores(y_true: list[str], y_pred: list[str], closed_pred: list[str] | None = None) -> dict[str, float]:
    """Open-set intent metrics: ``y_true`` labels out-of-scope messages :data:`OOS_LABEL`; a prediction of
    :data:`OOS_INTENT` (or ``oos``) is a rejection.

    - ``in_scope_accuracy``: over in-scope messages, right intent and not rejected;
    - ``macro_f1``: over the in-scope intents and the out-of-scope class (rejections predict it);
      ``in_scope_macro_f1`` over the in-scope intents only;
    - ``oos_recall``: out-of-scope messages rejected / out-of-scope messages; ``oos_precision``: out-of-scope
      messages among the rejected ones (0 when nothing was rejected);
    - ``closed_set_in_scope_accuracy`` (with ``closed_pred``, the top intent without rejection): the same model
      as a closed-set classifier on the in-scope messages.
    """
    from sklearn.metrics import f1_score

    truth = np.asarray(y_true, dtype=object)
    pred = np.where(_rejected(np.asarray(y_pred, dtype=object)), OOS_LABEL, np.asarray(y_pred, dtype=object))
    oos, rejected = truth == OOS_LABEL, pred == OOS_LABEL
    inside = sorted(set(truth[~oos]))
    out = {
        "in_scope_accuracy": float(np.mean(pred[~oos] == truth[~oos])) if (~oos).any() else float("nan"),
        "macro_f1": float(f1_score(truth, pred, labels=[*inside, OOS_LABEL], average="macro", zero_division=0)),
        "in_scope_macro_f1": float(f1_score(truth, pred, labels=inside, average="macro", zero_division=0)),
        "oos_recall": float(rejected[oos].mean()) if oos.any() else float("nan"),
        "oos_precision": float(oos[rejected].mean()) if rejected.any() else 0.0,
        "rejected_in_scope": float(rejected[~oos].mean()) if (~oos).any() else float("nan"),
        "n_in_scope": int((~oos).sum()),
        "n_oos": int(oos.sum()),
    }
    if closed_pred is not None:
        closed = np.asarray(closed_pred, dtype=object)
        out["closed_set_in_scope_accuracy"] = float(np.mean(closed[~oos] == truth[~oos])) if (~oos).any() else 0.0
    return out


def recall_trade_off(
    scores: np.ndarray, truth: list[str], closed_pred: list[str], recall: float = 0.8
) -> dict[str, float]:
    """What a wanted out-of-scope ``recall`` costs with one in-scope score (reject below a threshold): the
    threshold on the test messages that reaches it and the in-scope accuracy left there. Descriptive only: it looks
    at the test labels, so it is never used to choose a model's threshold."""
    scores = np.asarray(scores, dtype=np.float64)
    t, closed = np.asarray(truth, dtype=object), np.asarray(closed_pred, dtype=object)
    oos = t == OOS_LABEL
    if not oos.any() or oos.all():
        return {}
    # the lowest threshold that rejects ceil(recall * n) of the n out-of-scope messages (reject score < threshold)
    need = max(1, int(np.ceil(recall * oos.sum() - 1e-9)))
    threshold = float(np.sort(scores[oos])[need - 1]) + 1e-12
    kept_right = (closed[~oos] == t[~oos]) & (scores[~oos] >= threshold)
    return {"oos_recall": float((scores[oos] < threshold).mean()), "in_scope_accuracy": float(kept_right.mean())}
