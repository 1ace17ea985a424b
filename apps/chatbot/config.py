"""Settings and defaults of the chatbot app: one place to read what it does out of the box.

Override with flags or a JSON file (``--config my.json`` with any field of :class:`Config`). The Rasa project itself
(pipeline, policies, domain, training data, test stories) is ``apps/chatbot/project/``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.config import from_json_file
from common.errors import ConfigError

APP = "chatbot"
REGISTRY_NAME = "chatbot"  # the model's name in the registry
PROJECT = Path(__file__).resolve().parent / "project"  # the Rasa project (runs in .venv-chatbot)
REPO = Path(__file__).resolve().parents[2]
MODEL_FILE = "model.tar.gz"  # Rasa's model archive inside a registered version's directory


def chatbot_venv() -> Path:
    """The Python 3.10 + Rasa environment: ``$MLREF_CHATBOT_VENV`` or ``<repo>/.venv-chatbot``."""
    return Path(os.environ.get("MLREF_CHATBOT_VENV", REPO / ".venv-chatbot"))


@dataclass
class Config:
    """Everything a training, test or serving run needs besides the data."""

    classifier_c: float | None = None  # intent logistic regression's inverse L2 strength; None: 3-fold CV picks it
    response_selector_epochs: int = 60  # FAQ/chitchat ResponseSelector
    ted_epochs: int = 40  # TEDPolicy (rules + memoization carry the test stories; TED generalises); 0 = no TED
    fallback_threshold: float = 0.4  # below this intent confidence -> nlu_fallback (two-stage fallback)
    cv_folds: int = 3  # NLU cross-validation for the model card (0: skip)
    rasa_port: int = 5005  # Rasa (127.0.0.1 only, behind the gateway)
    actions_port: int = 5055  # the action server (127.0.0.1 only, called by Rasa)
    upstream_timeout_s: float = 30.0  # the gateway's wait for Rasa's answer to one message
    recommender_url: str = "http://127.0.0.1:8001"
    fraud_url: str = "http://127.0.0.1:8002"
    http_timeout_s: float = 2.0  # the custom actions' calls to the other apps
    startup_timeout_s: float = 600.0  # rasa run loads TensorFlow and the model: minutes on a busy machine
    train_timeout_s: float = 3600.0
    seed: int = 42
    quick: bool = False  # few epochs, no cross-validation (demo/tests): sets the fields in QUICK
    text_column: str = "text"  # CSV column with the message text (--dataset files)
    intent_column: str = "intent"  # CSV column with the intent (Banking77: category)
    ref: str = "champion"  # the registered model evaluate measures and serve serves (alias or version)
    refresh_s: float = 10.0  # serve: check the registry this often; load a new champion without restart (0: never)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_file(cls, path: str | Path | None) -> Config:
        """Defaults, updated from a JSON file (unknown keys are an error)."""
        return from_json_file(cls, path)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> Config:
        """Apply ``quick`` (few epochs, no cross-validation) and refuse values no run can use."""
        if self.quick:
            for name, value in QUICK.items():
                setattr(self, name, value)
        for name in ("response_selector_epochs", "ted_epochs", "cv_folds"):
            if getattr(self, name) < 0:
                raise ConfigError(f"config {name}: must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.fallback_threshold <= 1.0:
            raise ConfigError(f"config fallback_threshold: must be in [0, 1], got {self.fallback_threshold}")
        if self.refresh_s < 0:
            raise ConfigError(f"config refresh_s: must be >= 0, got {self.refresh_s}")
        return self


QUICK: dict[str, Any] = {"response_selector_epochs": 15, "ted_epochs": 5, "cv_folds": 0}
