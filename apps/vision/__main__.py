"""``python -m apps.vision <command>``: image classification, trained fast on CPU, exported, served, monitored.

Every command works on the embedded digits set by default, or on your own images with ``--dataset PATH``: an
ImageFolder directory (``root/<class>/<image>``), a .tar/.tar.gz/.zip of one, or a folder with ``train`` and
``test`` (folders or archives); ``cifar10`` reads the CIFAR-10 JPEG copy from ``$MLREF_DATA_DIR/cifar10-jpeg``.
Distributed: ``torchrun --nproc_per_node=2 -m apps.vision train ...`` (batch size per process; rank 0 registers).
The commands and options follow the contract in ``common/cli.py``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import typer

from apps.vision.config import APP, REGISTRY_NAME, Config
from common import cli

app = cli.create_app(APP, REGISTRY_NAME, __doc__)
DATASET = typer.Option(
    None, "--dataset", "-d", help="ImageFolder dir / archive / train+test folder, 'digits' (default) or 'cifar10'"
)
ARCH = typer.Option(None, "--arch", help="airnet (default) or a torchvision name: resnet18, mobilenet_v3_small, ...")
EPOCHS = typer.Option(None, "--epochs", min=1, help="training epochs")
BATCH = typer.Option(None, "--batch-size", min=1, help="images per step (per process under torchrun)")
LR = typer.Option(None, "--lr", min=0.0, help="airnet: lr per 1024 images (airbench form); others: AdamW lr")
WIDTHS = typer.Option(None, "--widths", help="airnet block widths, e.g. 64,256,256")
SIZE = typer.Option(None, "--image-size", min=8, help="input size in pixels (square)")
PRETRAINED = typer.Option(False, "--pretrained", help="torchvision ImageNet weights (network or torch hub cache)")
INIT_FROM = typer.Option(None, "--init-from", help="fine-tune from a local state_dict (.pt, weights only)")
TTA = typer.Option(None, "--tta", min=0, max=2, help="test-time augmentation: 0 none, 1 flip, 2 flip+translate")
DEVICE = typer.Option(None, "--device", help="training device: auto (default: cuda > mps > cpu), cpu, cuda, cuda:N")


def _config(config: Path | None, **flags) -> Config:
    cfg = Config.from_file(config)
    for key, value in flags.items():
        if value is None or value is False:
            continue
        if key == "widths":
            try:
                value = tuple(int(v) for v in str(value).split(","))
            except ValueError:
                raise cli.fail(f"--widths {value!r}: comma-separated integers, e.g. 64,256,256") from None
        if key == "init_from":
            value = str(value)
        setattr(cfg, key, value)
    return cfg.validate()  # flags over the file: bounds checked again (DataError: one error line, exit 2)


def _name(dataset: Path | str | None) -> str:
    return str(dataset) if dataset is not None else "digits"


@app.command()
def demo(
    seed: int = typer.Option(42, "--seed"),
    tiny: bool = typer.Option(False, "--tiny", help="a smaller, faster variant (what the tests run)"),
) -> None:
    """The whole lifecycle on the digits set, offline, in $MLREF_HOME/demo/vision (your registry untouched)."""
    from apps.vision.demo import run_demo

    with cli.demo_home(APP) as home:
        summary = run_demo(seed=seed, tiny=tiny)
    cli.echo_json(summary)
    typer.echo(f"demo home: {home} (your own registry is untouched). Open next: {summary['report']}", err=True)


@app.command()
def train(
    dataset: str | None = DATASET,
    config: Path | None = cli.CONFIG,
    arch: str | None = ARCH,
    epochs: int | None = EPOCHS,
    batch_size: int | None = BATCH,
    lr: float | None = LR,
    widths: str | None = WIDTHS,
    image_size: int | None = SIZE,
    pretrained: bool = PRETRAINED,
    init_from: Path | None = INIT_FROM,
    tta: int | None = TTA,
    checkpoint_dir: Path | None = typer.Option(
        None, "--checkpoint-dir", help="checkpoint every epoch here; an interrupted run resumes"
    ),
    tune: int = cli.TUNE,
    promote: bool | None = cli.PROMOTE,
    seed: int | None = cli.SEED,
    device: str | None = DEVICE,
) -> None:
    """Train on the dataset's training split, calibrate on validation, evaluate on test, register a version."""
    from apps.vision.data import load, train_val_test
    from apps.vision.evaluate import calibrate, prior_baseline, write_evaluation
    from apps.vision.lifecycle import register
    from apps.vision.train import train as fit
    from apps.vision.train import tune as run_tune
    from common import training
    from common.config import get_settings

    cfg = _config(
        config,
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        widths=widths,
        image_size=image_size,
        pretrained=pretrained,
        init_from=init_from,
        tta=tta,
        seed=seed,
        device=device,
    )
    from apps.vision.model import AIRNET, build
    from apps.vision.precision import resolve_device

    resolve_device(cfg.device)  # a missing GPU is one error line before minutes of decoding

    if cfg.arch != AIRNET:  # a wrong name fails before minutes of decoding
        build(cfg.arch, 2)
    ds = load(dataset, image_size=cfg.image_size)
    tr, va, te = train_val_test(ds, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    if tune:
        cfg = run_tune(tr, va, cfg, tune)
    model, result = fit(tr, va, cfg, checkpoint_dir=checkpoint_dir)
    info = training.setup_distributed()
    if not info.is_main:  # under torchrun only rank 0 evaluates and registers
        training.cleanup_distributed()
        return
    calibrate(model, va)
    out = get_settings().path("reports", APP, cli.slug(_name(dataset)), "train", "x").parent
    report, res = write_evaluation(
        out,
        model,
        te,
        dataset=_name(dataset),
        info={
            "arch": cfg.arch,
            "epochs": cfg.epochs,
            "train_images": len(tr),
            "temperature": round(model.temperature, 4),
            "precision": (result.info.get("precision") or {}).get("name"),
        },
        baselines={"prior": prior_baseline(tr, te)},
    )
    test = {k: res[k] for k in ("accuracy", "top5_accuracy", "macro_precision", "macro_recall", "ece")}
    mv = register(
        model,
        tr,
        metrics={f"test_{k}": v for k, v in test.items()},
        dataset=_name(dataset),
        alias=cli.choose_alias(REGISTRY_NAME, promote),
    )
    cli.echo_json(
        {
            "version": mv.version,
            "aliases": mv.aliases,
            "arch": cfg.arch,
            "epochs": len(result.history),
            "temperature": model.temperature,
            "precision": result.info.get("precision"),
            "test": test,
            "skipped_files": len(ds.problems),
            "report": str(report),
        }
    )
    for p in ds.problems[:20]:
        typer.echo(f"skipped {p.path}: {p.reason}", err=True)
    training.cleanup_distributed()
    typer.echo(cli.train_summary(REGISTRY_NAME, APP, mv.version), err=True)


@app.command()
def evaluate(
    dataset: str | None = DATASET, config: Path | None = cli.CONFIG, seed: int | None = cli.SEED, ref: str = cli.REF
) -> None:
    """The registered model (--ref) on the dataset's test split against the prior baseline: metrics + report."""
    from apps.vision.data import load, train_val_test
    from apps.vision.evaluate import prior_baseline, write_evaluation
    from apps.vision.lifecycle import load_version
    from common.config import get_settings

    cfg = _config(config, seed=seed)
    model, mv = load_version(ref)
    ds = load(dataset, image_size=model.image_size)
    tr, _, te = train_val_test(ds, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    if tr.classes != model.classes:
        raise cli.fail(
            f"{_name(dataset)} has classes {tr.classes[:10]}..., version {mv.version} knows {model.classes[:10]}..."
        )
    out = get_settings().path("reports", APP, cli.slug(_name(dataset)), "evaluation", "x").parent
    report, res = write_evaluation(
        out,
        model,
        te,
        dataset=_name(dataset),
        info={"version": mv.version},
        baselines={"prior": prior_baseline(tr, te)},
    )
    cli.echo_json(
        {
            "version": mv.version,
            "report": str(report),
            "metrics": {k: v for k, v in res.items() if k not in ("per_class", "confusion")},
        }
    )


@app.command()
def serve(
    host: str | None = cli.HOST,
    port: int | None = cli.PORT,
    backend: str = typer.Option("torch", "--backend", help="torch, torchscript or onnx"),
) -> None:
    """Serve the champion over HTTP on 127.0.0.1 (POST /v1/images:classify; hot-swaps when the champion moves)."""
    from apps.vision.service import build_app
    from common.serving import serve as run

    run(build_app(backend=backend), host=host, port=port)


@app.command()
def predict(
    image: Path = typer.Argument(..., help="an image file"),
    ref: str = cli.REF,
    k: int = typer.Option(5, "--k", min=1, help="labels to show"),
) -> None:
    """Classify one image with the champion (or --ref)."""
    from apps.vision.data import ImageError, decode_image
    from apps.vision.lifecycle import load_version

    model, mv = load_version(ref)
    try:
        arr, _ = decode_image(image.read_bytes(), model.image_size, max_pixels=Config().max_pixels)
    except (OSError, ImageError) as exc:
        raise cli.fail(f"{image}: {exc}") from None
    import torch

    probs = model.predict_proba(torch.from_numpy(arr)[None])[0]
    top = probs.topk(min(k, len(model.classes)))
    cli.echo_json(
        {
            "version": mv.version,
            "labels": [
                {"label": model.classes[i], "probability": float(p)}
                for i, p in zip(top.indices.tolist(), top.values.tolist(), strict=True)
            ],
        }
    )


@app.command()
def batch(
    input_path: Path = typer.Option(..., "--input", "-i", help="a folder or archive of images"),
    output: Path = cli.OUTPUT_FILE,
    ref: str = cli.REF,
    chunksize: int = cli.CHUNKSIZE,
    k: int = typer.Option(5, "--k", min=1, help="labels per image"),
) -> None:
    """Classify every image of a folder/archive: ``path, prediction, confidence, top_k, error`` (atomic write)."""
    from apps.vision.lifecycle import batch_score, load_version

    model, mv = load_version(ref)
    res = batch_score(model, input_path, output, k=k, chunksize=min(chunksize, 10_000))
    cli.echo_json({"version": mv.version, **res})


@app.command()
def monitor(
    dataset: Path = typer.Option(
        ..., "--dataset", "-d", help="recent images: a folder/archive (ImageFolder layout adds accuracy)"
    ),
    ref: str = cli.REF,
) -> None:
    """Drift of recent images (statistics, embedding, predictions, confidence) vs training. Exit 1 on an alert."""
    from apps.vision.data import read_folder
    from apps.vision.lifecycle import load_version
    from apps.vision.lifecycle import monitor as run_monitor
    from common import registry
    from common.config import get_settings
    from common.data import DataError

    model, mv = load_version(ref)
    try:
        images = read_folder(dataset, image_size=model.image_size, classes=model.classes)
    except DataError:
        images = read_folder(dataset, image_size=model.image_size, labelled=False)
    out = get_settings().path("reports", APP, "monitor", "x").parent
    verdict = run_monitor(model, registry.fetch_model_dir(mv), images, out, version=mv.version)
    cli.echo_json(
        {
            "version": mv.version,
            "alerts": verdict.alerts,
            "drifted_features": verdict.drifted_features,
            "stats": verdict.stats,
            "report": str(out / "drift.md"),
        }
    )
    cli.exit_monitor(bool(verdict.alerts))


@app.command()
def retrain(
    dataset: Path = typer.Option(..., "--dataset", "-d", help="newly labelled images (ImageFolder)"),
    config: Path | None = cli.CONFIG,
    margin: float = cli.MARGIN,
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="fine-tuning epochs"),
) -> None:
    """Fine-tune the champion on new labelled images; promote only if it wins on the latest labelled ones."""
    from apps.vision.data import read_folder
    from apps.vision.lifecycle import load_version, summary
    from apps.vision.lifecycle import retrain as run_retrain

    cfg = _config(config, fine_tune_epochs=epochs)
    champion, _ = load_version()
    images = read_folder(dataset, image_size=champion.image_size, classes=champion.classes)
    cli.echo_json(summary(run_retrain(images, cfg, dataset=str(dataset), margin=margin)))


@app.command()
def export(
    ref: str = cli.REF,
    out: Path = typer.Option(..., "--out", help="directory for model.onnx + model.ts"),
    check: bool = typer.Option(True, "--check/--no-check", help="compare ONNX/TorchScript with torch"),
) -> None:
    """Copy a version's TorchScript and ONNX exports (made at registration) out, after a parity check."""
    import torch

    from apps.vision.export import ONNX, TORCHSCRIPT, parity
    from common import registry

    mv = registry.get(REGISTRY_NAME, ref)
    model_dir = registry.fetch_model_dir(mv)
    diffs = {}
    if check:
        from apps.vision.model import VisionModel

        size = VisionModel.load(model_dir).image_size
        diffs = parity(model_dir, torch.randint(0, 256, (8, 3, size, size), dtype=torch.uint8))
    out.mkdir(parents=True, exist_ok=True)
    for name in (ONNX, TORCHSCRIPT, "model.json"):
        shutil.copyfile(model_dir / name, out / name)
    cli.echo_json({"version": mv.version, "out": str(out), "max_abs_logit_diff": diffs})


@app.command()
def bench(
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="an ImageFolder (default: CIFAR-10 JPEG copy in MLREF_DATA_DIR)"
    ),
    output: Path | None = typer.Option(None, "--output", "-o"),
    budget_s: float = typer.Option(1080.0, "--budget-s", min=1.0, help="training seconds of the long run"),
    short_budget_s: float = typer.Option(400.0, "--short-budget-s", min=1.0, help="training seconds of the short run"),
    runs: str = typer.Option("short,long", "--runs", help="short and/or long"),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="fixed epochs per run (no budget probe)"),
    limit: int | None = typer.Option(
        None, "--limit", min=10, help="use only this many images per split (a quick check of the pipeline)"
    ),
    config: Path | None = typer.Option(
        None, "--config", help='JSON of Config fields over the bench recipe (e.g. {"widths": [32, 128, 128]})'
    ),
    seeds: int = typer.Option(1, "--seeds", min=1, max=20, help="with --epochs: repeat over seeds, report mean ± std"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
) -> None:
    """Accuracy vs training wall-clock -> bench/results/vision.json (+ .png curve, .md table).

    ``--epochs 10 --seeds 2``: the hardware-independent quality figure (a fixed 10-epoch schedule), with the
    training FLOP/s against the machine's measured GEMM peak and the time to 90/92 %, kept per CPU kind."""
    from apps.vision.bench import BENCH_CONFIG, run_bench
    from apps.vision.precision import resolve_device

    resolve_device(device)  # one error line before minutes of decoding
    cfg = replace(BENCH_CONFIG, device=device)
    if config is not None:
        Config.from_file(config)  # validates: unknown keys or bad JSON are a user error
        cfg = Config.from_dict({**cfg.to_dict(), **json.loads(config.read_text())})
    doc = run_bench(
        dataset,
        output=output,
        runs=tuple(r.strip() for r in runs.split(",") if r.strip()),
        budget_s=budget_s,
        short_budget_s=short_budget_s,
        epochs=epochs,
        cfg=cfg,
        limit=limit,
        seeds=seeds,
    )
    typer.echo(
        json.dumps(
            {
                "output": doc.get("output"),
                "figure": doc.get("figure"),
                **{
                    k: {"metrics": v["metrics"], "train_s": v["train_s"], "time_to": v["time_to"]}
                    for k, v in doc["models"].items()
                },
                "serving": doc["serving"],
            },
            indent=2,
        )
    )


def main() -> None:  # pragma: no cover
    os.environ.setdefault("OMP_NUM_THREADS", str(min(os.cpu_count() or 2, 2)))
    cli.run(app)


if __name__ == "__main__":  # pragma: no cover
    main()
