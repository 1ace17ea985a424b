"""The vision pipeline: every stage the CLI, the demo and the benchmark run, in one place.

``data (decode once, stratified train/validation/test) -> train (train.py; tuning optional) -> calibrate on
validation -> evaluate on test against the prior baseline (report) -> register (exports + monitoring reference) ->
serve / batch -> monitor (image statistics, embedding, predictions) -> retrain (fine-tune, fair comparison)``.
:class:`VisionApp` implements :class:`common.app.App`; ``__main__.py`` builds the command line from it.

Under ``torchrun`` every rank loads the data and trains in step (DDP inside :func:`apps.vision.train.train`); only
rank 0 goes on to calibrate, report and register. The other ranks run :func:`train_worker` (no tracking run, no
report, no version): see ``__main__.py``.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from apps.vision.config import APP, REGISTRY_NAME, Config
from apps.vision.data import DIGITS, Images, digits, load, read_folder, write_image_folder
from apps.vision.model import VisionModel
from common import registry
from common.app import App, Evaluation, Fitted, Monitoring, Option, Tiny, set_field
from common.data import DataError
from common.workspace import Workspace

log = logging.getLogger(__name__)

TEST_METRICS = ("accuracy", "top5_accuracy", "macro_precision", "macro_recall", "ece")


def is_ddp_worker() -> bool:
    """A ``torchrun`` process other than rank 0 (it trains in step with rank 0 and does nothing else)."""
    return int(os.environ.get("RANK", "0")) != 0


def _widths(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):  # the --widths flag
        try:
            return tuple(int(v) for v in value.split(","))
        except ValueError:
            raise DataError(f"--widths {value!r}: comma-separated integers, e.g. 64,256,256") from None
    return tuple(value)


def _model_info(model: VisionModel, **extra: Any) -> dict[str, Any]:
    """What the report's model section says about ``model``."""
    meta = model.meta
    return {
        "arch": meta.get("arch"),
        "widths": meta.get("widths"),
        "epochs": len(meta.get("history") or []),
        "temperature": round(model.temperature, 4),
        "precision": (meta.get("precision") or {}).get("name"),
        **extra,
    }


class VisionApp(App[Config, Images, VisionModel]):
    """Image classification of labelled folders: trained fast on CPU, calibrated, exported, served, monitored."""

    name = APP
    registry_name = REGISTRY_NAME
    config_type = Config
    default_dataset = DIGITS
    dataset_help = "ImageFolder dir / archive / train+test folder, 'digits' (default) or 'cifar10'"
    recent_help = "recent images: a folder/archive (ImageFolder layout adds accuracy)"
    flags = {
        "train": (
            "arch",
            "epochs",
            "batch_size",
            "lr",
            "image_size",
            "pretrained",
            "init_from",
            "tta",
            "device",
            "checkpoint_dir",
            "widths",
            "cache",
            "cache_dir",
        ),
        "evaluate": ("ref", "cache", "cache_dir"),
        "retrain": ("fine_tune_epochs:epochs",),
        "demo": ("tiny",),
    }
    options = {
        "serve": (Option("backend", str | None, None, "torch (default), torchscript or onnx"),),
        "batch": (Option("k", int, 5, "labels per image", min=1),),
    }
    batch_chunk = (10_000, "images decoded and scored per chunk (memory grows with it)")
    batch_input = (..., "a folder or archive of images")

    def config(self, path: Path | None = None, values: Mapping[str, Any] | None = None) -> Config:
        """Defaults, the JSON file, then ``values`` (flags); ``widths`` may be ``"64,256,256"``. Every field's type
        and bounds are checked (:meth:`Config.validate`, a DataError naming the field)."""
        cfg = Config.from_file(path)
        for dotted, value in (values or {}).items():
            set_field(cfg, dotted, _widths(value) if dotted == "widths" else value)
        return cfg.validate()

    # --- the stages -------------------------------------------------------------------------------------------------
    def load_data(self, ws: Workspace, dataset: str | None, cfg: Config) -> Images:
        """Decode the dataset once at ``cfg.image_size`` and split it; a wrong device or architecture is refused
        first (one error line before minutes of decoding)."""
        from apps.vision.model import AIRNET, build
        from apps.vision.precision import resolve_device

        resolve_device(cfg.device)
        if cfg.arch != AIRNET:
            build(cfg.arch, 2)
        ds = load(
            dataset,
            image_size=cfg.image_size,
            data_dir=ws.data_dir,
            cache=cfg.cache,
            cache_dir=cache_dir(ws, cfg),
        )
        return Images.split(self.dataset_name(dataset), dataset, ds, cfg.val_fraction, cfg.test_fraction, cfg.seed)

    def fit(self, ws: Workspace, data: Images, cfg: Config, *, tune: int = 0) -> Fitted[VisionModel]:
        """Train on the training split (``tune`` Optuna trials on validation first), calibrate the temperature on
        validation, evaluate on test against the prior baseline: a report directory ``<app>/<dataset>/evaluation``.

        Under torchrun only rank 0 calibrates and reports; the others return the uncalibrated model."""
        from apps.vision.evaluate import calibrate, prior_baseline, write_evaluation
        from apps.vision.train import train
        from apps.vision.train import tune as run_tune
        from common import training
        from common.reports import new_report_dir, publish

        if tune:
            cfg = run_tune(data.train, data.val, cfg, tune)
        ckpt = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        model, result = train(data.train, data.val, cfg, checkpoint_dir=ckpt)
        info = training.setup_distributed()  # under torchrun: the group training joined; which rank is this?
        training.cleanup_distributed()
        if not info.is_main:
            return Fitted(model, summary={"rank": info.rank})
        t0 = time.perf_counter()
        calibrate(model, data.val)
        seconds = time.perf_counter() - t0
        log.info(
            "calibrated: temperature %.3f on %d validation images in %.1f s", model.temperature, len(data.val), seconds
        )
        t0 = time.perf_counter()
        out = new_report_dir(self.name, data.name, "evaluation", root=ws.reports)
        report, res = write_evaluation(
            out,
            model,
            data.test,
            dataset=data.name,
            info=_model_info(model, train_images=len(data.train)),
            baselines={"prior": prior_baseline(data.train, data.test)},
        )
        publish(out)
        log.info("evaluated on %d test images, report %s in %.1f s", len(data.test), report, time.perf_counter() - t0)
        test = {k: res[k] for k in TEST_METRICS}
        return Fitted(
            model,
            metrics={f"test_{k}": v for k, v in test.items()},
            summary={
                "arch": cfg.arch,
                "epochs": len(result.history),
                "temperature": model.temperature,
                "precision": result.info.get("precision"),
                "test": test,
                "skipped_files": len(data.dataset.problems),
                "report": str(report),
            },
        )

    def register(
        self, ws: Workspace, fitted: Fitted[VisionModel], data: Images, cfg: Config, *, dataset: str, alias: str | None
    ) -> registry.ModelVersion:
        from apps.vision.lifecycle import register

        return register(fitted.model, data.train, metrics=fitted.metrics, dataset=dataset, alias=alias)

    def load_model(self, ws: Workspace, ref: str = registry.CHAMPION) -> tuple[VisionModel, registry.ModelVersion]:
        from apps.vision.lifecycle import load_version

        return load_version(ref)

    def evaluate(
        self, ws: Workspace, data: Images, cfg: Config, out: Path, *, fitted: Fitted[VisionModel] | None = None
    ) -> Evaluation:
        """The registered model ``cfg.ref`` (or ``fitted``) on the test split against the prior baseline."""
        from apps.vision.evaluate import prior_baseline, write_evaluation

        version = None
        if fitted is not None:
            model = fitted.model
        else:
            model, mv = self.load_model(ws, cfg.ref)
            version = mv.version
        if model.image_size != data.train.image_size:
            log.info("decoding %s again at the model's %d px", data.name, model.image_size)
            data = self.load_data(ws, data.source, replace(cfg, image_size=model.image_size))
        if data.train.classes != model.classes:
            raise DataError(
                f"{data.name} has classes {data.train.classes[:10]}..., the model knows {model.classes[:10]}..."
            )
        prior = prior_baseline(data.train, data.test)
        report, res = write_evaluation(
            out,
            model,
            data.test,
            dataset=data.name,
            info=_model_info(model, **({"version": version} if version else {})),
            baselines={"prior": prior},
        )
        metrics = {k: v for k, v in res.items() if k not in ("per_class", "confusion")}
        return Evaluation(metrics=metrics, report=report, extra={"version": version, "baselines": {"prior": prior}})

    def service(
        self,
        ws: Workspace,
        *,
        backend: str | None = None,
        cfg: Config | None = None,
        refresh_interval_s: float | None = 5.0,
        prediction_log: bool = True,
    ) -> Any:
        from apps.vision.service import build_app

        return build_app(
            ws=ws, backend=backend, cfg=cfg, refresh_interval_s=refresh_interval_s, prediction_log=prediction_log
        )

    def serve(self, ws: Workspace, host: str | None, port: int | None, *, backend: str | None = None) -> None:
        from common import serving

        serving.serve(self.service(ws, backend=backend), host=host, port=port)

    def batch(
        self, ws: Workspace, model: VisionModel, source: Path, output: Path, *, chunksize: int, k: int = 5
    ) -> dict[str, Any]:
        """Every image of a folder/archive: ``path, prediction, confidence, top_k, error`` (atomic write)."""
        from apps.vision.lifecycle import batch_score

        return batch_score(model, Path(source), Path(output), k=k, chunksize=min(chunksize, 10_000))

    def predict(self, ws: Workspace, model: VisionModel, image: Path, *, k: int = 5) -> list[dict[str, Any]]:
        """The top ``k`` labels of one image file with their calibrated probabilities."""
        import torch

        from apps.vision.data import ImageError, decode_image

        try:
            arr, _ = decode_image(Path(image).read_bytes(), model.image_size, max_pixels=Config().max_pixels)
        except (OSError, ImageError) as exc:
            raise DataError(f"{image}: {exc}") from None
        top = model.predict_proba(torch.from_numpy(arr)[None])[0].topk(min(k, len(model.classes)))
        return [
            {"label": model.classes[i], "probability": float(p)}
            for i, p in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        ]

    def monitor(
        self, ws: Workspace, model: VisionModel, version: registry.ModelVersion, recent: Path, out: Path
    ) -> Monitoring:
        """Drift of recent images (statistics, embedding, predictions, confidence) against the training reference;
        an ImageFolder of the model's classes adds the accuracy."""
        from apps.vision.lifecycle import monitor

        # the recent images are read like training's: to the disk cache when they would not fit in memory
        defaults = Config()
        where = {"cache": defaults.cache, "cache_dir": cache_dir(ws, defaults)}
        try:
            images = read_folder(recent, image_size=model.image_size, classes=model.classes, **where)
        except DataError:
            images = read_folder(recent, image_size=model.image_size, labelled=False, **where)
        verdict = monitor(model, registry.fetch_model_dir(version), images, out, version=version.version)
        stats = {**verdict.stats, "drifted_features": list(verdict.drifted_features)}
        return Monitoring(alerts=list(verdict.alerts), stats=stats, report=out / "drift.md")

    def retrain(self, ws: Workspace, dataset: str | None, cfg: Config, *, margin: float) -> dict[str, Any]:
        """Fine-tune the champion on newly labelled images; promote only if it wins on images neither model saw."""
        from apps.vision.lifecycle import retrain, summary

        if dataset is None:
            raise DataError("retrain --dataset: give a folder/archive of newly labelled images (ImageFolder layout)")
        champion, _ = self.load_model(ws)
        images = read_folder(
            dataset,
            image_size=champion.image_size,
            classes=champion.classes,
            cache=cfg.cache,
            cache_dir=cache_dir(ws, cfg),
        )
        return summary(retrain(images, cfg, dataset=str(dataset), margin=margin))

    def demo_config(self, seed: int) -> Config:
        from apps.vision.demo import DEMO_CONFIG

        return replace(DEMO_CONFIG, seed=seed)

    def demo(self, ws: Workspace, cfg: Config) -> dict[str, Any]:
        from apps.vision.demo import run_demo

        return run_demo(ws, cfg, self)

    def tiny(self) -> Tiny:
        """Every 10th digit (180 images, 10 classes) written as an ImageFolder, at 16 px, a net of widths 8/16/16."""

        def recent(directory: Path) -> Path:
            images = digits(16)
            return write_image_folder(images.subset(np.arange(5, len(images), 20)), directory / "recent-digits")

        values = {"widths": [8, 16, 16], "image_size": 16, "epochs": 2, "batch_size": 32, "tta": 1}
        values |= {"channels_last": False, "seed": 0}
        return Tiny(str(_tiny_folder()), values, recent)


@functools.cache
def _tiny_folder() -> Path:
    """A small ImageFolder of digits (written once per process into a temporary directory, removed at exit)."""
    root = Path(tempfile.mkdtemp(prefix="mlref-vision-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    images = digits(16)
    return write_image_folder(images.subset(np.arange(0, len(images), 10)), root / "digits-sample")


APP_IMPL = VisionApp()


def cache_dir(ws: Workspace, cfg: Config) -> Path:
    """Where decoded images are cached on disk: ``cfg.cache_dir``, else ``<data dir>/cache/vision``."""
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else ws.data_dir / "cache" / APP


def train_worker(ws: Workspace, dataset: str | None, cfg: Config, *, tune: int = 0) -> None:
    """What a torchrun rank other than 0 runs for ``train``: load and (tune and) train in step with rank 0 (DDP
    averages the gradients), then leave; rank 0 alone opens the tracking run, reports and registers."""
    from common.config import seed_everything

    seed_everything(cfg.seed)
    fitted = APP_IMPL.fit(ws, APP_IMPL.load_data(ws, dataset, cfg), cfg, tune=tune)
    log.info("rank %s: trained in step with rank 0, which registers the model", fitted.summary.get("rank"))
