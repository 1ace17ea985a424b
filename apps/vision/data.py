"""Images in, one uint8 tensor out: ImageFolder directories, archives, train/test layouts and the demo set.

Accepted ``--dataset`` values:

- a directory in ImageFolder layout, ``root/<class>/<image>`` (sub-folders inside a class folder are walked);
- a ``.tar``, ``.tar.gz``/``.tgz`` or ``.zip`` of one (a single top-level folder around the class folders is
  stripped);
- a directory holding ``train`` and ``test`` (folders or archives of the two, e.g. ``train.tar.gz``): then that
  test split is the test set; otherwise :func:`split` makes a deterministic stratified train/validation/test split;
- ``digits`` (the default): scikit-learn's 1,797 handwritten digits (8x8, 10 classes), upscaled to 32x32 RGB, a
  small real image set that ships with an installed dependency, so the demo runs offline;
- ``cifar10``: the CIFAR-10 JPEG copy in ``$MLREF_DATA_DIR/cifar10-jpeg`` (``train.tar.gz`` + ``test.tar.gz``), or
  torchvision's CIFAR-10 (downloaded with its checksum where a network exists).

Every file is decoded once into ``images[N, 3, S, S]`` (uint8, RGB, shorter side resized to ``S`` then centre
cropped; grayscale, palette and RGBA images are converted, EXIF rotation applied); augmentation later works on
whole batches of that tensor. A file that cannot be used (zero bytes, truncated, not an image, too many pixels,
too large) is skipped and reported with its path and reason (:attr:`ImageSet.problems`), never crashing a run.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from common.config import get_settings
from common.data import DataError, DownloadError

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
DIGITS = "digits"
CIFAR10 = "cifar10"


class ImageError(ValueError):
    """An input that is not a usable image (the message says why, in a few words)."""


@dataclass
class Problem:
    """A skipped file: where it was and why."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class ImageSet:
    """Decoded images: ``images[N, 3, S, S]`` uint8 RGB, ``labels[N]`` int64 indices into ``classes``
    (-1 = unlabelled), the source of each image and its original ``sizes[N, 2]`` (width, height)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    paths: list[str] = field(default_factory=list)
    sizes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray | list[int]) -> ImageSet:
        idx = np.asarray(idx, dtype=np.int64)
        t = torch.from_numpy(idx)
        return ImageSet(
            self.images[t], self.labels[t], list(self.classes), [self.paths[i] for i in idx], self.sizes[idx], []
        )

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def counts(self) -> dict[str, int]:
        """Images per class."""
        bc = torch.bincount(self.labels[self.labels >= 0], minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, bc, strict=True))


@dataclass
class Dataset:
    """What :func:`load` returns: the labelled images, a given test split (or None) and the dataset's name."""

    name: str
    train: ImageSet
    test: ImageSet | None = None

    @property
    def problems(self) -> list[Problem]:
        return self.train.problems + (self.test.problems if self.test is not None else [])


# ------------------------------------------------------------------------------------------ decoding


def decode_image(data: bytes, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int]]:
    """``(uint8[3, size, size] RGB, (width, height) of the original)`` from an encoded image's bytes.

    Raises :class:`ImageError` for empty data, a non-image, a truncated file or more than ``max_pixels``
    pixels (checked from the header, before decoding: a decompression bomb is refused without being expanded).
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(f"{w}x{h} = {w * h} pixels > limit {max_pixels} (possible decompression bomb)")
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("P", "LA", "PA") or (img.mode == "RGBA"):
                img = img.convert("RGBA")
                background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, img)
            img = img.convert("RGB")
            if img.size != (size, size):
                img = ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised format)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"too many pixels (> limit {max_pixels}; possible decompression bomb)") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or malformed data
        raise ImageError(f"unreadable image: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a decoder bug on hostile bytes is still a bad file, not a crash
        raise ImageError(f"unreadable image: {type(exc).__name__}: {exc}") from None
    return arr, (w, h)


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


Entry = tuple[str, tuple[str, ...], bytes | None, str | None]


def iter_files(root: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Iterator[Entry]:
    """``(display path, relative parts, bytes or None, problem or None)`` for every file of a directory or archive.

    Hidden files and ``__MACOSX`` are skipped; files over ``max_file_bytes`` yield a problem instead of bytes.
    """
    if root.is_dir():
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root).parts
            if not f.is_file() or _hidden(rel):
                continue
            size = f.stat().st_size
            if size > max_file_bytes:
                yield str(f), rel, None, f"file too large ({size} bytes > {max_file_bytes})"
                continue
            yield str(f), rel, f.read_bytes(), None
    elif root.name.lower().endswith(".zip"):
        try:
            with zipfile.ZipFile(root) as zf:
                for info in sorted(zf.infolist(), key=lambda i: i.filename):
                    rel = PurePosixPath(info.filename).parts
                    if info.is_dir() or _hidden(rel):
                        continue
                    where = f"{root}:{info.filename}"
                    if info.file_size > max_file_bytes:
                        yield where, rel, None, f"file too large ({info.file_size} bytes > {max_file_bytes})"
                        continue
                    yield where, rel, zf.read(info), None
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"{root}: not a readable zip archive ({exc})") from None
    else:
        try:
            with tarfile.open(root, mode="r:*") as tf:
                for member in tf:
                    rel = PurePosixPath(member.name).parts
                    if not member.isfile() or _hidden(rel) or ".." in rel:
                        continue
                    where = f"{root}:{member.name}"
                    if member.size > max_file_bytes:
                        yield where, rel, None, f"file too large ({member.size} bytes > {max_file_bytes})"
                        continue
                    fh = tf.extractfile(member)
                    yield where, rel, fh.read() if fh is not None else b"", None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{root}: not a readable tar archive ({exc})") from None


def _strip_common_top(entries: list[Entry]) -> list[Entry]:
    """Drop a single top-level folder shared by every entry when the class folders are inside it."""
    while entries and all(len(e[1]) >= 3 for e in entries) and len({e[1][0] for e in entries}) == 1:
        entries = [(w, rel[1:], b, p) for w, rel, b, p in entries]
    return entries


def read_folder(
    root: str | Path,
    *,
    image_size: int,
    classes: list[str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    labelled: bool = True,
    progress: bool = True,
) -> ImageSet:
    """Decode every image under ``root`` (a directory or archive).

    ``labelled``: ImageFolder layout, the first folder level is the class (files outside a class folder are
    reported). ``classes``: the class list to map folder names onto (a folder not in it is reported); default:
    the sorted folder names. Unlabelled (``labelled=False``): any file anywhere, label -1.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such file or directory")
    entries = list(iter_files(root, max_file_bytes=max_file_bytes))
    if labelled:
        entries = _strip_common_top(entries)
    problems: list[Problem] = []
    if labelled:
        names = sorted({rel[0] for _, rel, _, _ in entries if len(rel) >= 2})
        classes = list(classes) if classes is not None else names
        if not classes:
            raise DataError(f"{root}: no class folders found; expected ImageFolder layout root/<class>/<image>")
    index = {c: i for i, c in enumerate(classes or [])}
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    paths: list[str] = []
    sizes: list[tuple[int, int]] = []
    for where, rel, data, problem in tqdm(
        entries, desc=f"decoding {root.name}", unit="img", disable=not progress, leave=False
    ):
        if problem is not None:
            problems.append(Problem(where, problem))
            continue
        label = -1
        if labelled:
            if len(rel) < 2:
                problems.append(Problem(where, "not inside a class folder"))
                continue
            if rel[0] not in index:
                problems.append(Problem(where, f"class folder {rel[0]!r} is not one of the model's classes"))
                continue
            label = index[rel[0]]
        try:
            arr, wh = decode_image(data or b"", image_size, max_pixels=max_pixels)
        except ImageError as exc:
            problems.append(Problem(where, str(exc)))
            continue
        arrays.append(arr)
        labels.append(label)
        paths.append(where)
        sizes.append(wh)
    for p in problems:
        log.warning("skipped %s: %s", p.path, p.reason)
    if problems:
        log.warning("%s: %d file(s) skipped, %d images read", root, len(problems), len(arrays))
    if not arrays:
        detail = f"; first problem: {problems[0].path}: {problems[0].reason}" if problems else ""
        raise DataError(f"{root}: no readable images ({len(problems)} file(s) skipped){detail}")
    images = torch.from_numpy(np.stack(arrays))
    return ImageSet(
        images,
        torch.tensor(labels, dtype=torch.int64),
        list(classes or []),
        paths,
        np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
        problems,
    )


def _split_entry(root: Path, name: str) -> Path | None:
    for cand in [root / name, *(root / f"{name}{s}" for s in ARCHIVE_SUFFIXES)]:
        if cand.is_dir() or is_archive(cand):
            return cand
    return None


# ------------------------------------------------------------------------------------------ embedded / reference


def digits(image_size: int = 32) -> ImageSet:
    """scikit-learn's handwritten digits (1,797 images, 8x8, 16 grey levels), upscaled to RGB ``image_size``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    small = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    arrays = []
    for im in small:
        big = Image.fromarray(im, mode="L").resize((image_size, image_size), Image.Resampling.BILINEAR)
        arrays.append(np.repeat(np.asarray(big)[None], 3, axis=0))
    images = torch.from_numpy(np.stack(arrays))
    classes = [str(c) for c in d.target_names]
    return ImageSet(
        images,
        torch.from_numpy(d.target.astype(np.int64)),
        classes,
        [f"digits:{i}" for i in range(len(small))],
        np.full((len(small), 2), 8, dtype=np.int64),
    )


def cifar10_dir() -> Path:
    return get_settings().data_path / "cifar10-jpeg"


def _torchvision_cifar(image_size: int, train: bool) -> ImageSet:
    import torchvision

    root = get_settings().data_path / "cifar10"
    try:
        ds = torchvision.datasets.CIFAR10(str(root), train=train, download=True)  # md5-checked by torchvision
    except Exception as exc:  # noqa: BLE001 - urllib/HTTP errors of every kind mean "could not fetch"
        raise DownloadError(
            f"CIFAR-10 is not in {cifar10_dir()} and could not be downloaded ({exc}); put the "
            "JPEG copy (train.tar.gz + test.tar.gz) there or run where a network exists"
        ) from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    if image_size != 32:
        images = torch.nn.functional.interpolate(images.float(), size=image_size, mode="bilinear").round().byte()
    n = len(images)
    return ImageSet(
        images,
        torch.tensor(ds.targets, dtype=torch.int64),
        list(ds.classes),
        [f"cifar10:{'train' if train else 'test'}:{i}" for i in range(n)],
        np.full((n, 2), 32, dtype=np.int64),
    )


# ------------------------------------------------------------------------------------------ entry points


def load(
    dataset: str | Path | None = None,
    *,
    image_size: int = 32,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> Dataset:
    """Read ``dataset`` (see the module docstring); a given test split keeps the training set's classes."""
    if dataset is None or str(dataset) == DIGITS:
        return Dataset(DIGITS, digits(image_size))
    if str(dataset) in (CIFAR10, "cifar10-jpeg"):
        root = cifar10_dir()
        if _split_entry(root, "train") is None:
            return Dataset(CIFAR10, _torchvision_cifar(image_size, True), _torchvision_cifar(image_size, False))
        dataset = root
    root = Path(dataset).expanduser()
    if not root.exists():
        raise DataError(
            f"--dataset {dataset}: no such file or directory (an ImageFolder directory, a .tar/.tar.gz/"
            f".zip of one, a folder with train/ and test/, '{DIGITS}' or '{CIFAR10}')"
        )
    name = root.name.split(".")[0] if is_archive(root) else root.name
    kw = dict(image_size=image_size, max_pixels=max_pixels, progress=progress)
    if root.is_dir():
        tr, te = _split_entry(root, "train"), _split_entry(root, "test")
        if tr is not None and te is not None:
            train = read_folder(tr, **kw)
            test = read_folder(te, classes=train.classes, **kw)
            return Dataset(name, train, test)
    return Dataset(name, read_folder(root, **kw))


def content_hashes(images: ImageSet) -> np.ndarray:
    """A 64-bit BLAKE2b digest of each decoded image's pixels, ``uint64[N]``: the same picture decoded at the same
    size gets the same digest whatever its file name, so retraining can tell images a model was trained on."""
    arr = images.images.contiguous().numpy()
    return np.array(
        [int.from_bytes(hashlib.blake2b(a.tobytes(), digest_size=8).digest(), "little") for a in arr],
        dtype=np.uint64,
    )


def split(labels: torch.Tensor | np.ndarray, fractions: tuple[float, ...], seed: int = 0) -> list[np.ndarray]:
    """Deterministic stratified split of indices: one array per fraction plus the remainder (first).

    Per class, a seeded permutation; each fraction gets ``round(n_class * f)`` (at least 1 when the class has
    more images than fractions); the remainder keeps at least one image.
    """
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        start = 0
        for j, f in enumerate(fractions):
            k = round(len(idx) * f)
            if len(idx) > len(fractions):
                k = max(k, 1)
            k = min(k, max(len(idx) - start - 1, 0))
            parts[j + 1].extend(idx[start : start + k].tolist())
            start += k
        parts[0].extend(idx[start:].tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def train_val_test(
    ds: Dataset, val_fraction: float, test_fraction: float, seed: int
) -> tuple[ImageSet, ImageSet, ImageSet]:
    """(train, validation, test): the given test split when the dataset has one, else a stratified split."""
    if len(ds.train) < 3:
        raise DataError(f"{ds.name}: {len(ds.train)} labelled image(s); need at least 3 (train/validation/test)")
    if ds.test is not None:
        tr, va = split(ds.train.labels, (val_fraction,), seed)
        return ds.train.subset(tr), ds.train.subset(va), ds.test
    tr, va, te = split(ds.train.labels, (val_fraction, test_fraction), seed)
    return ds.train.subset(tr), ds.train.subset(va), ds.train.subset(te)


def write_image_folder(images: ImageSet, root: str | Path, *, fmt: str = "png", labelled: bool = True) -> Path:
    """Write ``images`` as ``root/<class>/<nnnnn>.<fmt>`` (or flat when not ``labelled``); returns ``root``."""
    root = Path(root)
    for i in range(len(images)):
        arr = images.images[i].permute(1, 2, 0).numpy()
        label = int(images.labels[i])
        folder = root / images.classes[label] if labelled and label >= 0 else root
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(folder / f"{i:05d}.{fmt}")
    return root


def alter(
    images: ImageSet, *, brightness: float = 0.55, blur: float = 1.2, noise: float = 12.0, seed: int = 0
) -> ImageSet:
    """A drifted copy: darker, blurred and noisier images (what a new camera or lighting might do)."""
    from PIL import ImageFilter

    rng = np.random.default_rng(seed)
    out = []
    for i in range(len(images)):
        img = Image.fromarray(images.images[i].permute(1, 2, 0).numpy()).filter(ImageFilter.GaussianBlur(blur))
        arr = np.asarray(img, dtype=np.float32) * brightness + rng.normal(0, noise, (*img.size[::-1], 3))
        out.append(np.clip(arr, 0, 255).astype(np.uint8).transpose(2, 0, 1))
    return ImageSet(
        torch.from_numpy(np.stack(out)),
        images.labels.clone(),
        list(images.classes),
        list(images.paths),
        images.sizes.copy(),
    )
