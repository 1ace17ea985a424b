"""Reading images: layouts, archives, odd and broken files, splits, the embedded digits."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from apps.vision.data import (
    Dataset,
    ImageError,
    decode_image,
    digits,
    load,
    read_folder,
    split,
    train_val_test,
)
from common.data import DataError
from tests.vision.conftest import CLASSES, SIZE, bomb_png, make_folder, png_bytes


def test_odd_and_broken_files_are_reported_and_skipped(odd_folder: Path) -> None:
    s = read_folder(odd_folder, image_size=SIZE, progress=False)
    assert s.classes == sorted(CLASSES)
    assert s.images.dtype == torch.uint8 and tuple(s.images.shape[1:]) == (3, SIZE, SIZE)
    # 12 good + grayscale + RGBA + palette, converted to RGB
    assert len(s) == 15
    names = {Path(p).name for p in s.paths}
    assert {"grey.png", "alpha.png", "palette.gif"} <= names
    reasons = {Path(p.path).name: p.reason for p in s.problems}
    assert set(reasons) == {"empty.jpg", "truncated.jpg", "notes.txt", "stray.png", "bomb.png"}
    assert "0 bytes" in reasons["empty.jpg"]
    assert "unreadable" in reasons["truncated.jpg"] or "truncated" in reasons["truncated.jpg"]
    assert "not an image" in reasons["notes.txt"]
    assert "class folder" in reasons["stray.png"]
    assert "pixels" in reasons["bomb.png"] and "limit" in reasons["bomb.png"] and "bomb" in reasons["bomb.png"]
    grey = s.images[[Path(p).name for p in s.paths].index("grey.png")]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # L -> RGB replicates the channel


def test_decode_refuses_a_decompression_bomb_from_its_header() -> None:
    with pytest.raises(ImageError, match=r"pixels.*limit 40000000.*decompression bomb"):
        decode_image(bomb_png(), 32, max_pixels=40_000_000)
    with pytest.raises(ImageError, match="8000x8000 = 64000000 pixels > limit 40000000"):
        decode_image(bomb_png(8000, 8000), 32, max_pixels=40_000_000)
    small = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ImageError, match="4096 pixels > limit 1000"):
        decode_image(png_bytes(small), 32, max_pixels=1000)
    arr, wh = decode_image(png_bytes(np.zeros((20, 40, 3), np.uint8)), 16)
    assert arr.shape == (3, 16, 16) and wh == (40, 20)


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_archives_with_a_top_level_folder(tiny_folder: Path, tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"photos.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            for f in sorted(tiny_folder.rglob("*.png")):
                zf.write(f, f"photos/{f.relative_to(tiny_folder)}")
    else:
        with tarfile.open(path, "w:gz") as tf:
            tf.add(tiny_folder, arcname="photos")
    ds = load(path, image_size=SIZE, progress=False)
    direct = read_folder(tiny_folder, image_size=SIZE, progress=False)
    assert ds.name == "photos" and ds.train.classes == sorted(CLASSES) and ds.test is None
    assert torch.equal(ds.train.images, direct.images) and torch.equal(ds.train.labels, direct.labels)


def test_train_test_layout_uses_the_given_test_split(tmp_path: Path) -> None:
    make_folder(tmp_path / "set" / "train", per_class=10)
    make_folder(tmp_path / "tmpl" / "test", per_class=3, seed=5)
    with tarfile.open(tmp_path / "set" / "test.tar.gz", "w:gz") as tf:  # an archive beside a folder
        tf.add(tmp_path / "tmpl" / "test", arcname="test")
    shutil.rmtree(tmp_path / "tmpl")
    ds = load(tmp_path / "set", image_size=SIZE, progress=False)
    assert len(ds.train) == 30 and ds.test is not None and len(ds.test) == 9
    tr, va, te = train_val_test(ds, 0.2, 0.2, seed=0)
    assert te is ds.test and len(tr) + len(va) == 30 and len(va) == 6


def test_test_split_with_an_unknown_class_is_reported(tmp_path: Path) -> None:
    make_folder(tmp_path / "set" / "train", per_class=3)
    make_folder(tmp_path / "set" / "test", per_class=2)
    (tmp_path / "set" / "test" / "purple").mkdir()
    (tmp_path / "set" / "test" / "purple" / "x.png").write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    ds = load(tmp_path / "set", image_size=SIZE, progress=False)
    assert len(ds.test) == 6
    assert any("'purple' is not one of the model's classes" in p.reason for p in ds.problems)


def test_stratified_split_is_deterministic_and_disjoint() -> None:
    y = np.repeat(np.arange(3), [50, 20, 5])
    a = split(y, (0.1, 0.2), seed=3)
    b = split(y, (0.1, 0.2), seed=3)
    assert all(np.array_equal(x, z) for x, z in zip(a, b, strict=True))
    allidx = np.concatenate(a)
    assert len(allidx) == len(y) == len(np.unique(allidx))
    for part in a[1:]:  # every class appears in validation and test
        assert set(y[part]) == {0, 1, 2}
    assert np.bincount(y[a[2]]).tolist() == [10, 4, 1]


def test_bad_datasets_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="no class folders"):
        load(tmp_path / "flat")
    (tmp_path / "bad" / "cat").mkdir(parents=True)
    (tmp_path / "bad" / "cat" / "a.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"no readable images.*not an image"):
        load(tmp_path / "bad", progress=False)
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    with pytest.raises(DataError, match="not a readable zip"):
        load(tmp_path / "broken.zip")
    with pytest.raises(DataError, match="at least 3"):
        train_val_test(
            Dataset(
                "x",
                read_folder(make_folder(tmp_path / "one", per_class=1), image_size=8, progress=False).subset([0, 1]),
            ),
            0.1,
            0.1,
            0,
        )


def test_embedded_digits() -> None:
    d = digits(32)
    assert len(d) == 1797 and d.classes == [str(i) for i in range(10)]
    assert d.images.shape == (1797, 3, 32, 32) and d.images.dtype == torch.uint8
    assert int(d.images.max()) > 200  # rescaled from 16 grey levels to 0..255
