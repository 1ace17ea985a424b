"""TorchScript and ONNX exports agree with eager torch, and the service can load either."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from apps.vision.export import export, parity
from apps.vision.model import VisionModel


def test_exports_match_torch(tiny_trained, tmp_path: Path) -> None:
    model, _, _, te = tiny_trained
    path = model.save(tmp_path / "m")
    files = export(path)
    assert files["onnx"].stat().st_size > 0 and files["torchscript"].stat().st_size > 0
    diffs = parity(path, te.images)
    assert diffs["onnx"] < 1e-3 and diffs["torchscript"] < 1e-4, diffs
    # the batch dimension is dynamic and probabilities (with TTA and temperature) agree per backend
    ref = VisionModel.load(path).predict_proba(te.images[:5])
    for backend in ("torchscript", "onnx"):
        vm = VisionModel.load(path, backend)
        assert vm.backend == backend
        assert torch.allclose(vm.predict_proba(te.images[:5]), ref, atol=1e-4)
        assert vm.predict_proba(te.images[:1]).shape == (1, 3)


def _readme_snippet() -> str:
    """The onnxruntime recipe of apps/vision/README.md (section "Predict and export"), as a user would copy it."""
    readme = (Path(__file__).resolve().parents[2] / "apps" / "vision" / "README.md").read_text()
    section = readme.split("## Predict and export", 1)[1]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


@pytest.mark.parametrize("tta", [0, 1, 2])
def test_the_readme_onnx_recipe_reproduces_predict(tiny_trained, tmp_path: Path, monkeypatch, tta: int) -> None:
    """Feeding the exported ONNX file as the README says gives the probabilities ``predict`` prints."""
    import dataclasses
    import json

    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from apps.vision.__main__ import app
    from apps.vision.config import REGISTRY_NAME
    from common import registry
    from tests.vision.conftest import colour_image

    model, _, _, _ = tiny_trained
    path = dataclasses.replace(model, tta=tta, temperature=1.7).save(tmp_path / "m")  # a copy; T != 1 shows
    export(path)
    registry.register(REGISTRY_NAME, path, alias=registry.CHAMPION)
    runner = CliRunner()
    r = runner.invoke(app, ["export", "--out", str(tmp_path / "exported")])
    assert r.exit_code == 0, r.output

    rng = np.random.default_rng(3)
    images = {
        "same-size.png": Image.fromarray(colour_image(2, rng)),
        "larger-wide.png": Image.fromarray(colour_image(0, rng, size=40).repeat(2, axis=1)),
        "photo.jpg": Image.fromarray(colour_image(1, rng, size=64)),
        "rgba.png": Image.fromarray(np.dstack([colour_image(1, rng), rng.integers(0, 256, (16, 16), np.uint8)])),
    }
    namespace: dict = {}
    monkeypatch.chdir(tmp_path)  # the snippet reads ./exported
    exec(compile(_readme_snippet(), "README.md", "exec"), namespace)  # our own README's code
    for name, img in images.items():
        img.save(tmp_path / name)
        r = runner.invoke(app, ["predict", str(tmp_path / name), "--k", "3"])
        assert r.exit_code == 0, r.output
        served = {d["label"]: d["probability"] for d in json.loads(r.stdout)["labels"]}
        ours = namespace["classify"](tmp_path / name)
        assert list(ours) == list(served), name  # same ranking
        assert np.allclose(list(ours.values()), list(served.values()), atol=1e-4), (name, ours, served)
    # the graph's output is the logits before the temperature: dividing by it is what makes them agree
    x = np.asarray(images["same-size.png"], np.float32).transpose(2, 0, 1)[None]
    z = namespace["tta_logits"](x)
    assert z.shape == (1, 3)
    untempered = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    served = namespace["classify"](tmp_path / "same-size.png")
    assert not np.allclose(sorted(untempered[0], reverse=True), list(served.values()), atol=1e-4)
