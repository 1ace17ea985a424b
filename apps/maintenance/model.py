"""The models: Li et al.'s deep CNN on sensor windows (PyTorch), conformal intervals, baselines and sktime pipelines.

- :class:`DCNN` (Li, Ding & Sun 2018, "Remaining useful life estimation in prognostics using deep convolution
  neural networks"): per-sensor temporal convolutions (kernel 10 along time, shared over sensors) in four layers of
  10 channels, a 1-channel layer of kernel 3, dropout 0.5, a 100-unit tanh layer and a linear output.
- :class:`Booster`: gradient-boosted trees (xgboost) on the causal health features of every cycle
  (:func:`apps.maintenance.features.health_features`: age, rolling statistics, drift from the unit's own start);
  the default model (FD001 RMSE 12, against 15 for the DCNN trained for 10 minutes here).
- :class:`RULModel`: preprocessing + one or more members of one kind (a seed ensemble, predictions averaged) +
  conformal intervals; what is registered and served. Saved as ``model.json`` + ``weights.pt`` (DCNN: tensors
  only, loaded with ``weights_only=True`` after the registry has checked the directory's sha256) or
  ``booster_<i>.json`` (xgboost's JSON model format; no pickle).
- :class:`Conformal`: split-conformal intervals, Mondrian by predicted-RUL bin, calibrated on validation units.
- Baselines: :class:`MeanBaseline` (training mean), :class:`LastWindowLinear` (ridge on the flattened last
  window); :class:`SktimeRegressor` (MiniRocket or summary features from sktime + a regressor).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from apps.maintenance.data import CYCLE, UNIT
from apps.maintenance.features import Preprocessor, health_features, windows

log = logging.getLogger(__name__)
# kernel 10 with padding="same" (the paper's layout) pads asymmetrically; torch warns that it copies the input
warnings.filterwarnings("ignore", message="Using padding='same' with even kernel lengths")


class DCNN(nn.Module):
    """``x[B, window, n_sensors] -> RUL[B]``. The 2-D (k x 1) convolutions of the paper run as 1-D convolutions over
    time with the sensors folded into the batch (identical maths). One change from the paper: the output is
    multiplied by ``out_scale`` (the RUL cap), so the last layer works in units of the cap and reaches the target
    range within an epoch instead of the tens of epochs raw-scale outputs need under Adam."""

    def __init__(
        self,
        n_sensors: int,
        window: int,
        channels: int = 10,
        kernel: int = 10,
        hidden: int = 100,
        dropout: float = 0.5,
        out_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.n_sensors, self.window, self.out_scale = n_sensors, window, float(out_scale)
        layers: list[nn.Module] = []
        c_in = 1
        for _ in range(4):
            layers += [nn.Conv1d(c_in, channels, kernel, padding="same"), nn.Tanh()]
            c_in = channels
        layers += [nn.Conv1d(c_in, 1, 3, padding="same"), nn.Tanh()]
        self.conv = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(n_sensors * window, hidden), nn.Tanh(), nn.Linear(hidden, 1)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv1d | nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, w, f = x.shape
        h = x.permute(0, 2, 1).reshape(b * f, 1, w)
        h = self.conv(h).reshape(b, f * w)
        return self.head(h).squeeze(-1) * self.out_scale


@dataclass
class Conformal:
    """Intervals ``[pred + lo_b, pred + hi_b]`` where ``b`` is the bin of the prediction (edges on predicted RUL)
    and ``lo_b``/``hi_b`` are the ``alpha/2`` and ``1 - alpha/2`` conformal quantiles of the calibration residuals
    ``y - pred`` in that bin (finite-sample corrected), widened where needed to contain the prediction; the lower
    bound is clipped at 0."""

    alpha: float
    edges: list[float]
    lo: list[float]
    hi: list[float]
    n_calibration: int = 0

    @classmethod
    def calibrate(cls, y: np.ndarray, pred: np.ndarray, alpha: float = 0.1, n_bins: int = 4) -> Conformal:
        """Fit on calibration targets and predictions (units never used for fitting the point model)."""
        y, pred = np.asarray(y, float), np.asarray(pred, float)
        if len(y) < 2:
            raise ValueError("conformal calibration needs at least 2 examples")
        n_bins = max(1, min(n_bins, len(y) // 50))
        edges = np.unique(np.quantile(pred, np.linspace(0, 1, n_bins + 1)[1:-1])).tolist() if n_bins > 1 else []
        b = np.searchsorted(edges, pred, side="right")
        lo, hi = [], []
        for k in range(len(edges) + 1):
            r = (y - pred)[b == k]
            # widened to contain the point prediction (only ever raises coverage)
            lo.append(min(_conformal_quantile(r, alpha / 2, lower=True), 0.0))
            hi.append(max(_conformal_quantile(r, alpha / 2, lower=False), 0.0))
        return cls(alpha, edges, lo, hi, len(y))

    def interval(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pred = np.asarray(pred, float)
        b = np.searchsorted(self.edges, pred, side="right")
        return np.maximum(pred + np.asarray(self.lo)[b], 0.0), pred + np.asarray(self.hi)[b]


def _conformal_quantile(r: np.ndarray, tail: float, *, lower: bool) -> float:
    """The ceil((n + 1)(1 - tail)) / n empirical quantile of ``r`` (or of ``-r`` for the lower side)."""
    n = len(r)
    if n == 0:
        return 0.0
    v = -r if lower else r
    level = min(1.0, np.ceil((n + 1) * (1 - tail)) / n)
    q = float(np.quantile(v, level, method="higher"))
    return -q if lower else q


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of ``y`` inside ``[lower, upper]``."""
    y = np.asarray(y, float)
    return float(np.mean((y >= lower) & (y <= upper)))


def predict_net(net: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """One network's predictions on windows ``x[n, window, f]`` (eval mode, no grad)."""
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(net(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


class Booster:
    """Gradient-boosted regression trees on health features ``h[n, d]`` -> RUL ``[n]`` (xgboost, ``hist`` trees).

    ``params``: ``trees``, ``depth``, ``lr``, ``min_child_weight`` (rows per leaf, in hessian units = rows for
    squared error); rows and features are subsampled at 0.8, so members with different seeds differ."""

    def __init__(self, model: Any) -> None:
        self.model = model  # xgboost.Booster

    @classmethod
    def fit(cls, h: np.ndarray, y: np.ndarray, params: dict[str, Any], seed: int) -> Booster:
        import xgboost as xgb

        reg = xgb.XGBRegressor(
            n_estimators=int(params["trees"]),
            max_depth=int(params["depth"]),
            learning_rate=float(params["lr"]),
            min_child_weight=float(params["min_child_weight"]),
            subsample=0.8,
            colsample_bytree=0.8,
            reg_lambda=1.0,
            tree_method="hist",
            random_state=seed,
        )
        reg.fit(h, y)
        return cls(reg.get_booster())

    def predict(self, h: np.ndarray) -> np.ndarray:
        if len(h) == 0:
            return np.zeros(0, np.float32)
        return self.model.inplace_predict(np.ascontiguousarray(h, dtype=np.float32), predict_type="value")

    def save(self, path: Path) -> None:
        self.model.save_model(str(path))

    @classmethod
    def load(cls, path: Path) -> Booster:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(path))  # JSON: data, not code
        return cls(booster)


@dataclass
class RULModel:
    """What is registered and served: preprocessing, the ensemble members, the conformal intervals.

    ``predict(df)`` gives one row per unit (its last cycle); ``predict_cycles(df)`` one row per cycle.
    """

    pre: Preprocessor
    nets: list[DCNN]
    conformal: Conformal | None
    cfg: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    boosters: list[Booster] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """``"boost"`` or ``"dcnn"``: the members' kind."""
        return "boost" if self.boosters else "dcnn"

    @property
    def members(self) -> int:
        return len(self.boosters) or len(self.nets)

    @property
    def window(self) -> int:
        return int(self.cfg["window"])

    @property
    def rul_cap(self) -> float:
        return float(self.cfg["rul_cap"])

    @property
    def baseline_cycles(self) -> int:
        return int(self.cfg.get("baseline_cycles", 20))

    def predict_windows(self, x: np.ndarray) -> np.ndarray:
        """DCNN members: mean of their predictions on windows ``x[n, window, f]``, clipped to ``[0, rul_cap]``."""
        preds = np.mean([predict_net(n, x) for n in self.nets], axis=0)
        return np.clip(preds, 0.0, self.rul_cap)

    def predict_features(self, h: np.ndarray) -> np.ndarray:
        """Booster members: mean of their predictions on health features ``h[n, d]``, clipped to ``[0, rul_cap]``."""
        preds = np.mean([b.predict(h) for b in self.boosters], axis=0)
        return np.clip(preds, 0.0, self.rul_cap)

    def predict_rows(self, df: pd.DataFrame, last_only: bool = False) -> tuple[np.ndarray, list]:
        """``(rul[n], index)``: predictions at every row of ``df`` (sorted by unit, cycle), or at each unit's last
        row, with ``index`` the ``(unit, cycle)`` of each."""
        x = self.pre.transform(df)
        if not self.boosters:
            w, _, index = windows(x, df, self.window, last_only=last_only)
            return self.predict_windows(w), index
        h = health_features(x, df, self.baseline_cycles)
        units, cycles = df[UNIT].to_numpy(), df[CYCLE].to_numpy()
        rows = np.arange(len(df))
        if last_only:
            rows = np.flatnonzero(np.r_[units[1:] != units[:-1], True]) if len(df) else rows
        return self.predict_features(h[rows]), [(str(units[i]), int(cycles[i])) for i in rows]

    def _frame(self, df: pd.DataFrame, last_only: bool) -> pd.DataFrame:
        pred, index = self.predict_rows(df, last_only)
        out = pd.DataFrame(index, columns=[UNIT, CYCLE])
        out["rul"] = pred
        if self.conformal is not None:
            lo, hi = self.conformal.interval(pred)
            out["lower"], out["upper"] = lo, hi
            out["alert"] = lo <= float(self.cfg["horizon"])
        return out

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        """Per unit (sorted rows of running units): ``unit, cycle, rul, lower, upper, alert`` at the last cycle."""
        return self._frame(df, last_only=True)

    def predict_cycles(self, df: pd.DataFrame) -> pd.DataFrame:
        """The same at every cycle of every unit (a trajectory)."""
        return self._frame(df, last_only=False)

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        doc = {
            "format": 1,
            "pre": self.pre.to_dict(),
            "cfg": self.cfg,
            "info": self.info,
            "conformal": self.conformal.__dict__ if self.conformal is not None else None,
            "kind": self.kind,
            "members": self.members,
            "arch": {"n_sensors": len(self.pre.sensors), "window": self.window},
        }
        (path / "model.json").write_text(json.dumps(doc, indent=1))
        for i, b in enumerate(self.boosters):
            b.save(path / f"booster_{i}.json")
        if self.boosters:
            return path
        weights = {
            f"{i}.{k}": v.detach().cpu().contiguous()
            for i, n in enumerate(self.nets)
            for k, v in n.state_dict().items()
        }
        torch.save(weights, path / "weights.pt")
        return path

    @classmethod
    def load(cls, path: Path) -> RULModel:
        """Inverse of :meth:`save` (tensors only: ``torch.load(weights_only=True)``)."""
        path = Path(path)
        doc = json.loads((path / "model.json").read_text())
        cfg = doc["cfg"]
        conf = Conformal(**doc["conformal"]) if doc.get("conformal") else None
        pre = Preprocessor.from_dict(doc["pre"])
        if doc.get("kind", "dcnn") == "boost":
            boosters = [Booster.load(path / f"booster_{i}.json") for i in range(int(doc["members"]))]
            return cls(pre, [], conf, cfg, doc.get("info", {}), boosters)
        weights = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
        nets = []
        for i in range(int(doc["members"])):
            net = make_net(doc["arch"]["n_sensors"], cfg)
            net.load_state_dict({k.split(".", 1)[1]: v for k, v in weights.items() if k.split(".", 1)[0] == str(i)})
            net.eval()
            nets.append(net)
        return cls(pre, nets, conf, cfg, doc.get("info", {}))


def make_net(n_sensors: int, cfg: dict[str, Any]) -> DCNN:
    return DCNN(
        n_sensors,
        int(cfg["window"]),
        int(cfg["channels"]),
        int(cfg["kernel"]),
        int(cfg["hidden"]),
        float(cfg["dropout"]),
        float(cfg["rul_cap"]) if cfg.get("scale_output", True) else 1.0,
    )


# ------------------------------------------------------------------ baselines and sktime pipelines


@dataclass
class WindowRegressor:
    """A baseline or sktime regressor behind the champion's preprocessing, so every model sees the same windows."""

    pre: Preprocessor
    reg: Any
    window: int
    cap: float
    fit_s: float = 0.0

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        """``unit, cycle, rul`` at each unit's last cycle."""
        x, _, index = windows(self.pre.transform(df), df, self.window, last_only=True)
        out = pd.DataFrame(index, columns=[UNIT, CYCLE])
        out["rul"] = np.clip(self.reg.predict(x), 0, self.cap)
        return out


@dataclass
class MeanBaseline:
    """Predicts the mean capped RUL of the training windows for every unit."""

    mean: float = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray) -> MeanBaseline:  # noqa: ARG002 - the regressors' interface
        self.mean = float(np.mean(y))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.mean)


@dataclass
class LastWindowLinear:
    """Ridge regression on the flattened window ``x[n, window * f]`` (the last window of a unit at test time)."""

    alpha: float = 1.0
    coef: np.ndarray | None = None
    intercept: float = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray) -> LastWindowLinear:
        from sklearn.linear_model import Ridge

        r = Ridge(alpha=self.alpha).fit(x.reshape(len(x), -1), y)
        self.coef, self.intercept = r.coef_, float(r.intercept_)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.coef is not None
        return x.reshape(len(x), -1) @ self.coef + self.intercept


class SktimeRegressor:
    """Window regressors beside the DCNN. ``"minirocket"``: the sktime pipeline, MiniRocketMultivariate with
    ``num_kernels`` kernels (sktime's default 10,000 did not finish in 20 minutes on FD001) + standardised RidgeCV;
    ``x[n, window, f]`` goes to sktime as a numpy3D panel ``[n, f, window]``. ``"summary"``: per-sensor mean, std,
    min, max over the whole window and its last 10 cycles plus the least-squares slope (numpy), then
    HistGradientBoosting."""

    def __init__(self, kind: str = "summary", *, num_kernels: int = 1000, seed: int = 0) -> None:
        if kind not in ("minirocket", "summary"):
            raise ValueError(f"kind must be minirocket or summary, not {kind!r}")
        self.kind, self.num_kernels, self.seed = kind, num_kernels, seed
        self.pipe: Any = None

    @staticmethod
    def _summary(x: np.ndarray) -> np.ndarray:
        panel = np.transpose(x, (0, 2, 1))
        return np.concatenate([_summary_np(panel), _summary_np(panel[:, :, -10:]), _slopes(panel)], axis=1)

    def fit(self, x: np.ndarray, y: np.ndarray) -> SktimeRegressor:
        if self.kind == "minirocket":
            from sklearn.linear_model import RidgeCV
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler
            from sktime.transformations.rocket import MiniRocketMultivariate

            self.rocket = MiniRocketMultivariate(num_kernels=self.num_kernels, random_state=self.seed)
            feats = self.rocket.fit_transform(np.transpose(x, (0, 2, 1)).astype(np.float64))
            self.pipe = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 4, 11)))
            self.pipe.fit(np.asarray(feats), y)
        else:
            from sklearn.ensemble import HistGradientBoostingRegressor

            self.pipe = HistGradientBoostingRegressor(
                max_iter=400, learning_rate=0.05, max_leaf_nodes=31, l2_regularization=1.0, random_state=self.seed
            )
            self.pipe.fit(self._summary(x), y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "minirocket":
            feats = self.rocket.transform(np.transpose(x, (0, 2, 1)).astype(np.float64))
            return self.pipe.predict(np.asarray(feats))
        return self.pipe.predict(self._summary(x))


def _summary_np(panel: np.ndarray) -> np.ndarray:
    """mean, std, min, max per channel of ``panel[n, f, t]`` -> ``[n, 4 f]``."""
    return np.concatenate([panel.mean(-1), panel.std(-1), panel.min(-1), panel.max(-1)], axis=1)


def _slopes(panel: np.ndarray) -> np.ndarray:
    """Least-squares slope over time per channel -> ``[n, f]``."""
    t = np.arange(panel.shape[-1], dtype=float)
    t -= t.mean()
    return (panel * t).sum(-1) / (t**2).sum()
