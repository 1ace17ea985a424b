"""The whole mlref lifecycle on a tiny scikit-learn model, in one straight-line script.

    python -m examples.lifecycle            # or: make demo-lifecycle

train -> register champion -> serve (real HTTP on 127.0.0.1) -> batch score -> drift on shifted data ->
retrain a challenger -> promotion decision -> the service hot-swaps to the new champion.
It is the smallest complete use of ``common/``; each app does the same with its own data and model.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sklearn.linear_model import LogisticRegression

from common import batch, monitoring, registry, retraining, serving
from common.config import get_settings, seed_everything
from common.data import fingerprint
from common.metrics.classification import average_precision, roc_auc

log = logging.getLogger(__name__)

NAME = "lifecycle-example"
FEATURES = ["x1", "x2", "x3", "segment"]
SEGMENTS = ["a", "b", "c"]


# ----------------------------------------------------------------------------- data
def make_data(n: int, *, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Synthetic tabular data: 3 numeric features, 1 categorical, a binary label.

    ``P(y=1) = sigmoid(1.5*x1 - x2 + 0.5*[segment == 'c'] + 2*shift*x3 - shift)``. ``shift`` moves x1's mean
    and the segment mix (data drift) and makes x3 matter (concept drift), so a model retrained on the shifted
    population beats the old one there.
    """
    rng = np.random.default_rng(seed)
    x1 = rng.normal(shift, 1.0, n)
    x2 = rng.normal(0.0, 1.0, n)
    x3 = rng.normal(0.0, 1.0, n)
    probs = np.array([0.5, 0.3, 0.2]) if shift == 0 else np.array([0.2, 0.3, 0.5])
    segment = rng.choice(SEGMENTS, size=n, p=probs)
    logit = 1.5 * x1 - x2 + 0.5 * (segment == "c") + 2.0 * shift * x3 - shift
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "segment": segment, "label": y})


def to_matrix(df: pd.DataFrame) -> np.ndarray:
    """Features -> (n, 5) float matrix: x1, x2, x3 and a one-hot of segment b / c."""
    seg = df["segment"].to_numpy()
    return np.column_stack([df["x1"], df["x2"], df["x3"], seg == "b", seg == "c"]).astype(float)


# ----------------------------------------------------------------------------- model
@dataclass
class Model:
    clf: LogisticRegression

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """P(label = 1), shape (n,)."""
        return self.clf.predict_proba(to_matrix(df))[:, 1]


def train(df: pd.DataFrame, seed: int) -> Model:
    return Model(LogisticRegression(C=1.0, random_state=seed).fit(to_matrix(df), df["label"]))


def save(model: Model, train_df: pd.DataFrame, path: Path) -> Path:
    """Model directory: the estimator (joblib; loaded only after the registry's hash check), the feature list
    and the monitoring reference profile of training features and predictions."""
    path.mkdir(parents=True, exist_ok=True)
    joblib.dump(model.clf, path / "model.joblib")
    (path / "features.json").write_text(json.dumps(FEATURES))
    ref = train_df[FEATURES].assign(prediction=model.predict(train_df))
    monitoring.ReferenceProfile.from_frame(ref, categorical=["segment"]).save(path / "reference.json")
    return path


def load(path: Path) -> Model:
    return Model(joblib.load(path / "model.joblib"))


# ----------------------------------------------------------------------------- service
class PredictRequest(BaseModel):
    x1: float
    x2: float
    x3: float
    segment: str = Field(pattern="^(a|b|c)$", description="one of a, b, c")


class PredictResponse(BaseModel):
    probability: float
    model_version: str | None


router = APIRouter()


@router.post("/v1/predict", response_model=PredictResponse)
def predict(req: PredictRequest, request: Request, loaded: serving.Loaded = Depends(serving.get_loaded)):
    p = float(loaded.model.predict(pd.DataFrame([req.model_dump()]))[0])
    request.app.state.metrics.observe_prediction(p)
    if request.app.state.prediction_log is not None:
        request.app.state.prediction_log.log({**req.model_dump(), "prediction": p, "version": loaded.version_id})
    return PredictResponse(probability=p, model_version=loaded.version_id)


def build_app(refresh_interval_s: float | None = 0.5):
    holder = serving.ModelHolder(NAME, load)
    plog = serving.PredictionLog(get_settings().path("predictions", f"{NAME}.jsonl"), sample_rate=1.0)
    return serving.create_app(
        "mlref lifecycle example", holder, [router], refresh_interval_s=refresh_interval_s, prediction_log=plog
    )


# ----------------------------------------------------------------------------- the lifecycle
def run(port: int = 8765, n: int = 4000, seed: int | None = None) -> dict:
    """Run every stage; returns what happened (used by the end-to-end test)."""
    import httpx

    seed = seed_everything(seed)
    home = get_settings().home
    out: dict = {}

    # 1. data + train + evaluate + register champion
    train_df, test_df = make_data(n, seed=seed), make_data(n // 2, seed=seed + 1)
    model = train(train_df, seed)
    p = model.predict(test_df)
    metrics = {"roc_auc": roc_auc(test_df["label"], p), "average_precision": average_precision(test_df["label"], p)}
    mv1 = registry.register(
        NAME,
        save(model, train_df, home / "work" / "v1"),
        metrics=metrics,
        params={"C": 1.0, "seed": seed},
        data_fingerprint=fingerprint(train_df),
        alias=registry.CHAMPION,
    )
    out["v1"] = {"version": mv1.version, **metrics}
    log.info("champion v%s: %s", mv1.version, metrics)

    # 2. serve over real HTTP: good and bad requests
    app = build_app()
    with serving.BackgroundServer(app, port) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        good = http.post("/v1/predict", json={"x1": 1.0, "x2": 0.0, "x3": 0.0, "segment": "c"})
        bad = http.post("/v1/predict", json={"x1": "high", "x2": 0.0, "x3": 0.0, "segment": "z"})
        out["serve"] = {"good": (good.status_code, good.json()), "bad": (bad.status_code, bad.json())}
        log.info(
            "POST /v1/predict -> %s %s; bad request -> %s %s",
            good.status_code,
            good.json(),
            bad.status_code,
            bad.json()["message"],
        )

        # 3. batch score a file
        current = make_data(n, shift=1.0, seed=seed + 2)
        src = home / "work" / "current.parquet"
        current.drop(columns="label").to_parquet(src)
        dst = home / "work" / "scored.parquet"
        champion = registry.load(NAME, registry.CHAMPION, load)[0]
        res = batch.score_file(src, dst, lambda df: df.assign(prediction=champion.predict(df)), chunksize=1000)
        out["batch"] = {"rows": res.rows, "output": str(res.output)}

        # 4. drift: the shifted population against the champion's reference profile
        scored = pd.read_parquet(dst)
        report = monitoring.run_check(
            registry.fetch_model_dir(mv1),
            scored[[*FEATURES, "prediction"]],
            home / "reports" / NAME,
            title="Lifecycle example: drift on the shifted population",
        )
        out["drift"] = {"drift": report.drift, "drifted": report.drifted_features, "alerts": report.alerts}
        log.info("drift: %s (%s)", report.drift, out["drift"]["drifted"])

        # 5. retrain on the new labelled data; compare on the most recent window; promote or keep
        recent = current.iloc[-n // 4 :]
        new_model = train(current.iloc[: -n // 4], seed)
        mv2 = registry.register(
            NAME, save(new_model, current, home / "work" / "v2"), data_fingerprint=fingerprint(current)
        )

        def evaluate(mv: registry.ModelVersion) -> float:
            m, _ = registry.load(NAME, mv.version, load)
            return average_precision(recent["label"], m.predict(recent))

        decision = retraining.champion_vs_challenger(NAME, mv2, evaluate, metric="average_precision", margin=0.0)
        out["decision"] = decision.to_dict()
        log.info("decision: %s", decision.reason)

        # 6. the running service picks up the new champion without a restart
        deadline = time.monotonic() + 15
        version = good.json()["model_version"]
        while decision.promoted and version != mv2.version and time.monotonic() < deadline:
            time.sleep(0.2)
            version = http.post("/v1/predict", json={"x1": 1.0, "x2": 0.0, "x3": 0.0, "segment": "c"}).json()[
                "model_version"
            ]
        out["served_version_after"] = version
        out["metrics_text"] = http.get("/metrics").text
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--n", type=int, default=4000, help="training rows")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = run(args.port, args.n, args.seed)
    out.pop("metrics_text")
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
