# ruff: noqa: UP006, UP035, UP037, ARG003 - Rasa's GraphComponent interface; Rasa checks these annotations against its own typing.List/Dict graph signatures
"""``components.featurizer.MiniLMFeaturizer``: all-MiniLM-L6-v2 sentence embeddings as Rasa dense features.

Adds one 384-d *sentence* feature to the text of every message (no sequence features: the classifier that uses it,
``components.classifier.SentenceLogRegClassifier``, reads sentence features only, and the ResponseSelector is set to
the count-vector featurizers). Not trainable; the encoder is plain numpy (``minilm.py``), so Rasa's environment
needs neither torch nor a hub download. Training data is encoded in batches of similar length.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Type

import numpy as np
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.featurizers.dense_featurizer.dense_featurizer import DenseFeaturizer
from rasa.nlu.tokenizers.tokenizer import Tokenizer
from rasa.shared.nlu.constants import FEATURE_TYPE_SENTENCE, TEXT
from rasa.shared.nlu.training_data.features import Features
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from components import speedups
from components.minilm import MiniLM

speedups.install()  # loaded with every model of this project: Rasa's server gets the cached response check

log = logging.getLogger(__name__)
_ENCODERS: Dict[str, MiniLM] = {}  # one copy of the weights per process, shared by every loaded model


def encoder(model_dir: str | None) -> MiniLM:
    key = model_dir or ""
    if key not in _ENCODERS:
        _ENCODERS[key] = MiniLM(model_dir)
    return _ENCODERS[key]


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER, is_trainable=False)
class MiniLMFeaturizer(DenseFeaturizer, GraphComponent):
    @classmethod
    def required_components(cls) -> List[Type]:
        return [Tokenizer]

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        return {**DenseFeaturizer.get_default_config(), "model_dir": None, "batch_size": 64}

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "MiniLMFeaturizer":
        return cls(config, execution_context.node_name)

    @classmethod
    def validate_config(cls, config: Dict[str, Any]) -> None:
        if int(config.get("batch_size", 64)) < 1:
            raise ValueError("MiniLMFeaturizer: batch_size must be >= 1")

    def __init__(self, config: Dict[str, Any], name: str) -> None:
        super().__init__(name, config)
        self.encoder = encoder(config.get("model_dir"))

    def _featurize(self, messages: List[Message]) -> None:
        todo = [m for m in messages if isinstance(m.get(TEXT), str) and m.get(TEXT).strip()]
        if not todo:
            return
        vectors = self.encoder.encode([m.get(TEXT) for m in todo], batch_size=int(self._config["batch_size"]))
        for message, vector in zip(todo, vectors, strict=True):
            message.add_features(Features(vector[np.newaxis, :], FEATURE_TYPE_SENTENCE, TEXT, self._identifier))

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        self._featurize(training_data.training_examples)
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        self._featurize(messages)
        return messages
