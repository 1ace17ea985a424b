"""``python -m apps.vision <command>``: image classification, trained fast on CPU, exported, served, monitored.

Every command works on the embedded digits set by default, or on your own images with ``--dataset PATH``: an
ImageFolder directory (``root/<class>/<image>``), a .tar/.tar.gz/.zip of one, or a folder with ``train`` and
``test`` (folders or archives); ``cifar10`` reads the CIFAR-10 JPEG copy from ``$MLREF_DATA_DIR/cifar10-jpeg``.
Distributed: ``torchrun --nproc_per_node=2 -m apps.vision train ...`` (batch size per process; rank 0 registers).
The standard commands come from the app's pipeline (``pipeline.py``) through :func:`common.app.build_cli`, with the
app's own options and flags (serve --backend, batch --k, train --widths, retrain --epochs); this file makes train
torchrun-aware and adds the commands whose arguments are the app's own (predict, export, bench).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from apps.vision.pipeline import APP_IMPL, is_ddp_worker, train_worker
from common import cli
from common.app import build_cli
from common.workspace import Workspace

app = build_cli(APP_IMPL)


def _command(name: str) -> Any:
    return next(c for c in app.registered_commands if c.name == name)


def _ddp_aware(info: Any) -> None:
    """Under torchrun, ranks other than 0 train in step with rank 0 and stop there (:func:`train_worker`)."""
    inner = info.callback

    def train(**kw: Any) -> None:
        if not is_ddp_worker():
            return inner(**kw)
        flags = {k[5:]: v for k, v in kw.items() if k.startswith("cfg__") and v is not None}
        cfg = APP_IMPL.config(kw["config"], flags | ({"seed": kw["seed"]} if kw["seed"] is not None else {}))
        train_worker(Workspace.from_env(), kw["dataset"], cfg, tune=kw["tune"])

    for attr in ("__signature__", "__annotations__", "__doc__", "__name__"):
        setattr(train, attr, getattr(inner, attr))
    info.callback = train


_ddp_aware(_command("train"))


@app.command()
def predict(
    image: Path = typer.Argument(..., help="an image file"),
    ref: str = cli.REF,
    k: int = typer.Option(5, "--k", min=1, help="labels to show"),
) -> None:
    """Classify one image with the champion (or --ref)."""
    ws = Workspace.from_env()
    with ws.activate():
        model, mv = APP_IMPL.load_model(ws, ref)
    cli.echo_json({"version": mv.version, "labels": APP_IMPL.predict(ws, model, image, k=k)})


@app.command()
def export(
    ref: str = cli.REF,
    out: Path = typer.Option(..., "--out", help="directory for model.onnx + model.ts"),
    check: bool = typer.Option(True, "--check/--no-check", help="compare ONNX/TorchScript with torch"),
) -> None:
    """Copy a version's TorchScript and ONNX exports (made at registration) out, after a parity check."""
    from apps.vision.export import copy_out
    from common import registry

    with Workspace.from_env().activate():
        mv = registry.get(APP_IMPL.registry_name, ref)
        diffs = copy_out(registry.fetch_model_dir(mv), out, check=check)
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
    scale: bool = typer.Option(
        False, "--scale", help="the scaling bench instead: peak RSS, decode time, images/s vs images, memory vs disk"
    ),
    sizes: str | None = typer.Option(None, "--sizes", help="--scale: images at 32 px, e.g. 1e3,1e4,1e5"),
    sizes_224: str | None = typer.Option(None, "--sizes-224", help="--scale: images at 224 px, e.g. 1e3,1e4"),
    throughput: bool | None = typer.Option(
        None, "--throughput/--no-throughput", help="--scale: CIFAR-10 images/s, memory vs disk cache"
    ),
) -> None:
    """Accuracy vs training wall-clock -> bench/results/vision.json (+ .png curve, .md table).

    ``--epochs 10 --seeds 2``: the hardware-independent quality figure (a fixed 10-epoch schedule), with the
    training FLOP/s against the machine's measured GEMM peak and the time to 90/92 %, kept per CPU kind.
    ``--scale``: how memory and time grow with the number of images (apps/vision/scale.py) ->
    bench/results/vision-scale.json (+ .png)."""
    if scale or sizes is not None or sizes_224 is not None or throughput is not None:
        raise typer.Exit(_scale(scale, sizes, sizes_224, throughput, output))
    from apps.vision.bench import bench_config, run_bench, summary

    cfg = bench_config(config, device)  # checked first: one error line before minutes of decoding
    doc = run_bench(
        dataset,
        ws=Workspace.from_env(),
        output=output,
        runs=tuple(r.strip() for r in runs.split(",") if r.strip()),
        budget_s=budget_s,
        short_budget_s=short_budget_s,
        epochs=epochs,
        cfg=cfg,
        limit=limit,
        seeds=seeds,
    )
    cli.echo_json(summary(doc))


def _scale(scale: bool, sizes: str | None, sizes_224: str | None, throughput: bool | None, output: Path | None) -> int:
    """``bench --scale``: options checked here (one ``error:`` line, exit 2), then :func:`apps.vision.scale.main`."""
    from apps.vision import scale as scaling_bench
    from common.scaling import parse_sizes

    if not scale:
        raise cli.fail("--sizes, --sizes-224 and --throughput belong to the scaling bench: add --scale")
    argv = [] if output is None else ["--output", str(output)]
    for flag, text in (("--sizes", sizes), ("--sizes-224", sizes_224)):
        if text is None:
            continue
        if text.strip() or flag == "--sizes":
            try:
                parse_sizes(text, minimum=10, what="images")
            except ValueError as exc:
                raise cli.fail(f"{flag}: {str(exc).removeprefix('--sizes: ')}") from None
        argv += [flag, text]
    if throughput is not None:
        argv.append("--throughput" if throughput else "--no-throughput")
    return scaling_bench.main(argv)


def main() -> None:  # pragma: no cover
    os.environ.setdefault("OMP_NUM_THREADS", str(min(os.cpu_count() or 2, 2)))
    cli.run(app)


if __name__ == "__main__":  # pragma: no cover
    main()
