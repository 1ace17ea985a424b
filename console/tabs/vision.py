"""Vision tab: upload or drop images, top-k calibrated probabilities from the classifier service, the model's
classes, and the latest evaluation's confusion matrix and most confident mistakes (from its report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from console.client import ServiceClient
from console.services import Service
from console.widgets import guarded, notice_box, small_figure

MAX_IMAGES = 8
ALL_CLASSES = 1000  # k for the call: every class's probability (the service caps it at the number of classes)


def classify(client: ServiceClient, paths: list[str]) -> dict[str, Any]:
    """``POST /v1/images:classify`` with the files as multipart fields; every class's probability."""
    if not paths:
        raise ValueError("images: drop one or more image files first")
    if len(paths) > MAX_IMAGES:
        raise ValueError(f"images: {len(paths)} files; the console sends at most {MAX_IMAGES} at a time")
    files = [("files", (Path(p).name, Path(p).read_bytes(), "application/octet-stream")) for p in paths]
    return client.post("/v1/images:classify", files=files, params={"k": ALL_CLASSES})


def top_table(answer: dict[str, Any], k: int) -> pd.DataFrame:
    rows = [
        [p["name"], rank + 1, lab["label"], round(lab["probability"], 4)]
        for p in answer["predictions"]
        for rank, lab in enumerate(p["labels"][:k])
    ]
    return pd.DataFrame(rows, columns=["image", "rank", "label", "probability"])


def classes_of(answer: dict[str, Any]) -> list[str]:
    return sorted(lab["label"] for lab in answer["predictions"][0]["labels"]) if answer["predictions"] else []


def figure(answer: dict[str, Any], paths: list[str], k: int):
    """One row per image: the thumbnail and its top-k probabilities as bars."""
    preds = answer["predictions"]
    fig, _ = small_figure(7.0, 1.9 * len(preds))
    fig.clear()
    for i, (pred, path) in enumerate(zip(preds, paths, strict=False)):
        ax_img = fig.add_subplot(len(preds), 3, 3 * i + 1)
        try:
            with Image.open(path) as im:
                im.thumbnail((160, 160))
                ax_img.imshow(np.asarray(im.convert("RGB")))
        except OSError:
            ax_img.text(0.5, 0.5, "(not shown)", ha="center", va="center")
        ax_img.set_axis_off()
        ax_img.set_title(pred["name"] or f"image {i + 1}", fontsize=8)
        ax = fig.add_subplot(len(preds), 3, (3 * i + 2, 3 * i + 3))
        labs = pred["labels"][:k][::-1]
        ax.barh([lab["label"] for lab in labs], [lab["probability"] for lab in labs], color="#2e86c1")
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=8)
        ax.set_xlabel("calibrated probability", fontsize=8)
    return fig


def evaluation_images(svc: Service) -> tuple[str | None, str | None, str]:
    cm, mistakes = svc.latest_report_file("confusion_matrix.png"), svc.latest_report_file("confident_mistakes.png")
    if cm is None:
        return None, None, "No evaluation report yet: `python -m apps.vision evaluate` (or the demo) writes one."
    return str(cm), str(mistakes) if mistakes else None, f"Latest evaluation: `{cm.parent}`"


def build(svc: Service) -> None:
    client = svc.client()
    box = notice_box()
    with gr.Row():
        files = gr.File(
            label="Images (drop or upload)", file_count="multiple", file_types=["image"], elem_id="vision-files"
        )
        with gr.Column():
            k = gr.Slider(1, 10, value=3, step=1, label="top k")
            go = gr.Button("Classify", variant="primary", elem_id="vision-classify-btn")
    head = gr.Markdown(elem_id="vision-headline")
    plot = gr.Plot(label="Top-k", elem_id="vision-plot")
    top = gr.Dataframe(headers=["image", "rank", "label", "probability"], interactive=False, elem_id="vision-table")
    classes = gr.Markdown(elem_id="vision-classes")
    with gr.Accordion("Latest evaluation", open=False):
        where = gr.Markdown()
        show = gr.Button("Show the latest evaluation", elem_id="vision-eval-btn")
        with gr.Row():
            cm = gr.Image(label="Confusion matrix", type="filepath", interactive=False)
            mistakes = gr.Image(label="Most confident mistakes", type="filepath", interactive=False)

    @guarded(box)
    def on_classify(paths: list[str] | None, kk: float) -> dict:
        paths = [str(p) for p in paths or []]
        answer = classify(client, paths)
        kk = int(kk)
        best = [
            f"{p['name']}: **{p['labels'][0]['label']}** ({p['labels'][0]['probability']:.0%})"
            for p in answer["predictions"]
        ]
        return {
            head: f"Model v{answer.get('model_version') or '?'} — " + "; ".join(best),
            plot: figure(answer, paths, kk),
            top: top_table(answer, kk),
            classes: "The model's classes: " + ", ".join(classes_of(answer)),
        }

    @guarded(box)
    def on_show() -> dict:
        a, b, text = evaluation_images(svc)
        return {cm: a, mistakes: b, where: text}

    go.click(on_classify, [files, k], [box, head, plot, top, classes])
    show.click(on_show, [], [box, cm, mistakes, where])
