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
whole batches of that tensor. That tensor lives in memory or, for sets too large for it, in a file on disk read
batch by batch (``cache="disk"``, :mod:`apps.vision.cache`). A file that cannot be used (zero bytes, truncated,
not an image, too many pixels, too large) is skipped and reported with its path and reason
(:attr:`ImageSet.problems`), never crashing a run.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import logging
import os
import stat
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from apps.vision import cache as disk_cache
from apps.vision.cache import DiskImages
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

    images: torch.Tensor  # or a DiskImages (the disk cache, apps/vision/cache.py): same indexing, read per batch
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
        images = self.images.select(idx) if isinstance(self.images, DiskImages) else self.images[t]
        return ImageSet(images, self.labels[t], list(self.classes), [self.paths[i] for i in idx], self.sizes[idx], [])

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


class DecodeBusy(RuntimeError):
    """The process-wide decoding budget stayed full for longer than a caller would wait (a server answers 503)."""


class DecodeBudget:
    """A process-wide bound on decoding: pixels being decoded at once and concurrent decodes.

    Each decode holds its cost (the pixels its decoder buffers) while it runs; a decode that
    would take the total over ``max_pixels`` (or the count over ``max_decodes``) waits, at most ``wait_s``
    seconds, then raises :class:`DecodeBusy`. One image costlier than the whole budget runs alone. Thread-safe.
    """

    def __init__(self, max_pixels: int, max_decodes: int) -> None:
        if max_pixels < 1 or max_decodes < 1:
            raise ValueError(f"decode budget: max_pixels {max_pixels} and max_decodes {max_decodes} must be >= 1")
        self.max_pixels, self.max_decodes = max_pixels, max_decodes
        self.pixels = 0  # held now
        self.decodes = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, cost: int, wait_s: float) -> Iterator[None]:
        """Hold ``cost`` pixels of the budget for the ``with`` block (waits up to ``wait_s`` s for room)."""
        cost = min(max(int(cost), 0), self.max_pixels)

        def room() -> bool:
            return self.pixels + cost <= self.max_pixels and self.decodes < self.max_decodes

        with self._cond:
            if not self._cond.wait_for(room, timeout=max(wait_s, 0.0)):
                raise DecodeBusy(
                    f"decoding budget full ({self.pixels} of {self.max_pixels} pixels, {self.decodes} decodes "
                    f"running) for {wait_s:g} s"
                )
            self.pixels += cost
            self.decodes += 1
        try:
            yield
        finally:
            with self._cond:
                self.pixels -= cost
                self.decodes -= 1
                self._cond.notify_all()


def release_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    After a large decode the freed buffers otherwise stay in the allocator's per-thread arenas: the process keeps
    the memory of its busiest moment for good.
    """
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc: ctypes.CDLL | bool | None = None
LARGE_DECODE_PIXELS = 4_000_000  # decodes at least this costly are followed by release_memory()


def decode_image(
    data: bytes,
    size: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    budget: DecodeBudget | None = None,
    wait_s: float = 0.0,
) -> tuple[np.ndarray, tuple[int, int]]:
    """``(uint8[3, size, size] RGB, (width, height) of the original)`` from an encoded image's bytes.

    Raises :class:`ImageError` for empty data, a non-image, a truncated file or more than ``max_pixels``
    pixels (checked from the header, before decoding: a decompression bomb is refused without being expanded).
    A JPEG is decoded at the smallest of 1/1, 1/2, 1/4, 1/8 scale still at least ``size`` (``Image.draft``).
    ``budget``: the decode holds its cost there while it runs (waiting up to ``wait_s``; :class:`DecodeBusy`).
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    cost = 0
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(f"{w}x{h} = {w * h} pixels > limit {max_pixels} (possible decompression bomb)")
            # a progressive JPEG's decoder keeps the DCT coefficients of the whole image whatever the output scale
            progressive = img.format == "JPEG" and bool(img.info.get("progressive") or img.info.get("progression"))
            if img.format == "JPEG":
                img.draft("RGB", (size, size))
            cost = w * h if progressive else img.size[0] * img.size[1]
            with budget.hold(cost, wait_s) if budget is not None else nullcontext():
                arr = _to_array(img, size)
    except (ImageError, DecodeBusy):
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised format)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"too many pixels (> limit {max_pixels}; possible decompression bomb)") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or malformed data
        raise ImageError(f"unreadable image: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a decoder bug on hostile bytes is still a bad file, not a crash
        raise ImageError(f"unreadable image: {type(exc).__name__}: {exc}") from None
    finally:
        if cost >= LARGE_DECODE_PIXELS:
            release_memory()
    return arr, (w, h)


def _to_array(img: Image.Image, size: int) -> np.ndarray:
    """Decode ``img`` and bring it to ``uint8[3, size, size]`` without keeping full-size copies around."""
    img.load()
    orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation in range(2, 9):
        img = ImageOps.exif_transpose(img)
    if img.mode in ("P", "LA", "PA", "RGBA"):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        del rgba
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (size, size):
        img = ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


@dataclass(frozen=True)
class Entry:
    """One file of a dataset: its path for messages, its parts relative to the root, a reader of its bytes (at
    most ``max_file_bytes``; raises :class:`ImageError` or ``OSError``) and the problem that keeps it out."""

    where: str
    rel: tuple[str, ...]
    read: Callable[[], bytes] | None
    problem: str | None = None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _bounded(fh: BinaryIO, limit: int) -> bytes:
    data = fh.read(limit + 1)
    if len(data) > limit:
        raise ImageError(f"file too large (more than {limit} bytes)")
    return data


def _read_file(path: Path, limit: int) -> bytes:
    """The bytes of a regular file (never blocks on a pipe swapped in after the walk)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ImageError("not a regular file")
        return _bounded(fh, limit)


def _walk_dir(root: Path, max_file_bytes: int) -> list[Entry]:
    """Every file under ``root`` in sorted order (depth first), without reading any.

    Symbolic links to files are followed only when they stay inside ``root``. A link that leaves it, a link to a
    folder (inside the root it is read at its own place, so never twice nor under another class), a broken link, a
    folder reached twice, an unreadable folder and anything but regular files and folders (devices, pipes, sockets)
    become entries with a problem, so they are reported like other bad files.
    """
    real_root = root.resolve()
    out: list[Entry] = []
    visited = {(st.st_dev, st.st_ino) for st in [root.stat()]}

    def children(folder: Path, rel: tuple[str, ...]) -> Iterator[tuple[Path, tuple[str, ...]]]:
        try:
            with os.scandir(folder) as it:
                names = sorted(e.name for e in it)
        except OSError as exc:
            out.append(Entry(str(folder), rel, None, f"unreadable folder ({exc.strerror or _one_line(exc)})"))
            return iter(())
        return ((folder / n, (*rel, n)) for n in names if not _hidden((n,)))

    stack = [children(root, ())]
    while stack:
        try:
            path, rel = next(stack[-1])
        except StopIteration:
            stack.pop()
            continue
        try:
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                target = path.resolve(strict=True)
                if not target.is_relative_to(real_root):
                    out.append(Entry(str(path), rel, None, f"symbolic link leaves the dataset root (-> {target})"))
                    continue
                st = target.stat()
                if stat.S_ISDIR(st.st_mode):  # read at its own place inside the root: never twice, never relabelled
                    where = target.relative_to(real_root)
                    out.append(
                        Entry(str(path), rel, None, f"symbolic link to a folder of the dataset ({where}), read there")
                    )
                    continue
        except RuntimeError:  # Python < 3.13: a symlink loop
            out.append(Entry(str(path), rel, None, "symbolic link loop"))
            continue
        except OSError as exc:
            out.append(Entry(str(path), rel, None, f"unreadable ({exc.strerror or _one_line(exc)})"))
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in visited:
                out.append(Entry(str(path), rel, None, "folder already read (a symbolic link loop or a second link)"))
                continue
            visited.add(key)
            stack.append(children(path, rel))
        elif not stat.S_ISREG(st.st_mode):
            out.append(Entry(str(path), rel, None, "not a regular file (a device, pipe or socket)"))
        elif st.st_size > max_file_bytes:
            out.append(Entry(str(path), rel, None, f"file too large ({st.st_size} bytes > {max_file_bytes})"))
        else:
            out.append(Entry(str(path), rel, partial(_read_file, path, max_file_bytes)))
    return out


def _zip_reader(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            with zf.open(info) as fh:
                return _bounded(fh, limit)
        except ImageError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
            raise ImageError(f"unreadable archive member ({_one_line(exc)})") from None

    return read


def _tar_reader(tf: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            fh = tf.extractfile(member)
            return _bounded(fh, limit) if fh is not None else b""
        except ImageError:
            raise
        except (tarfile.TarError, zlib.error, EOFError, ValueError) as exc:
            raise ImageError(f"unreadable archive member ({_one_line(exc)})") from None

    return read


@contextmanager
def open_files(root: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Iterator[list[Entry]]:
    """The files of a directory or archive as :class:`Entry` items, none read yet: each ``read()`` (valid inside
    the ``with`` block) reads one file, so a caller holds one file's bytes at a time, whatever the dataset's size.

    Hidden files and ``__MACOSX`` are skipped; files over ``max_file_bytes`` and unreadable ones are entries with a
    problem. Archive members are listed in archive order (tar) or by name (zip); folders in sorted order.
    """
    if root.is_dir():
        yield _walk_dir(root, max_file_bytes)
        return
    if not root.is_file():
        raise DataError(f"{root}: not a folder or a regular file")
    if root.name.lower().endswith(".zip"):
        try:
            zf = zipfile.ZipFile(root)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise DataError(f"{root}: not a readable zip archive ({_one_line(exc)})") from None
        with zf:
            entries = []
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                rel = PurePosixPath(info.filename).parts
                if info.is_dir() or _hidden(rel) or ".." in rel:
                    continue
                where = f"{root}:{info.filename}"
                if info.file_size > max_file_bytes:
                    entries.append(
                        Entry(where, rel, None, f"file too large ({info.file_size} bytes > {max_file_bytes})")
                    )
                else:
                    entries.append(Entry(where, rel, _zip_reader(zf, info, max_file_bytes)))
            yield entries
        return
    tar_errors = (tarfile.TarError, OSError, EOFError, zlib.error)
    what = "readable tar archive" if is_archive(root) else f"folder or an archive ({', '.join(ARCHIVE_SUFFIXES)})"
    try:
        tf = tarfile.open(root, mode="r:*")  # noqa: SIM115 - closed by the with block below, after every read
    except tar_errors as exc:
        raise DataError(f"{root}: not a {what} ({_one_line(exc)})") from None
    with tf:
        try:
            members = list(tf)
        except tar_errors as exc:
            raise DataError(f"{root}: not a {what} ({_one_line(exc)})") from None
        entries = []
        for member in members:
            rel = PurePosixPath(member.name).parts
            if not member.isfile() or _hidden(rel) or ".." in rel:
                continue
            where = f"{root}:{member.name}"
            if member.size > max_file_bytes:
                entries.append(Entry(where, rel, None, f"file too large ({member.size} bytes > {max_file_bytes})"))
            else:
                entries.append(Entry(where, rel, _tar_reader(tf, member, max_file_bytes)))
        yield entries


def _strip_common_top(entries: list[Entry]) -> list[Entry]:
    """Drop a single top-level folder shared by every entry when the class folders are inside it."""
    while entries and all(len(e.rel) >= 3 for e in entries) and len({e.rel[0] for e in entries}) == 1:
        entries = [replace(e, rel=e.rel[1:]) for e in entries]
    return entries


def _decoded(
    entries: list[Entry],
    *,
    image_size: int,
    max_pixels: int,
    index: dict[str, int] | None,
    desc: str,
    progress: bool,
) -> Iterator[tuple[str, int, np.ndarray | None, tuple[int, int] | None, str | None]]:
    """``(path, label, array, (width, height), None)`` per usable file, ``(path, -1, None, None, reason)`` per
    skipped one; reads and decodes one file at a time and drops its bytes before the next."""
    for e in tqdm(entries, desc=desc, unit="img", disable=not progress, leave=False):
        if e.problem is not None or e.read is None:
            yield e.where, -1, None, None, e.problem or "unreadable"
            continue
        label = -1
        if index is not None:
            if len(e.rel) < 2:
                yield e.where, -1, None, None, "not inside a class folder"
                continue
            if e.rel[0] not in index:
                yield e.where, -1, None, None, f"class folder {e.rel[0]!r} is not one of the model's classes"
                continue
            label = index[e.rel[0]]
        try:
            data = e.read()
            arr, wh = decode_image(data, image_size, max_pixels=max_pixels)
        except ImageError as exc:
            yield e.where, -1, None, None, str(exc)
            continue
        except OSError as exc:  # PermissionError, EIO, a file gone since the listing
            yield e.where, -1, None, None, f"unreadable file ({exc.strerror or _one_line(exc)})"
            continue
        finally:
            data = None
        yield e.where, label, arr, wh, None


def _image_set(
    arrays: list[np.ndarray],
    labels: list[int],
    classes: list[str],
    paths: list[str],
    sizes: list[tuple[int, int]],
    problems: list[Problem],
    image_size: int,
) -> ImageSet:
    images = torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros((0, 3, image_size, image_size), torch.uint8)
    return ImageSet(
        images,
        torch.tensor(labels, dtype=torch.int64),
        classes,
        paths,
        np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
        problems,
    )


def read_folder(
    root: str | Path,
    *,
    image_size: int,
    classes: list[str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    labelled: bool = True,
    progress: bool = True,
    cache: str = "memory",
    cache_dir: str | Path | None = None,
) -> ImageSet:
    """Decode every image under ``root`` (a directory or archive), one file at a time.

    ``labelled``: ImageFolder layout, the first folder level is the class (files outside a class folder are
    reported). ``classes``: the class list to map folder names onto (a folder not in it is reported); default:
    the sorted folder names. Unlabelled (``labelled=False``): any file anywhere, label -1.

    ``cache``: ``memory`` (one tensor in RAM; a set that will not fit is refused naming the bytes it needs),
    ``disk`` (decoded once into a file in ``cache_dir``, reused while the source is unchanged, read per batch) or
    ``auto`` (disk when the set would take a large share of the available memory); see :mod:`apps.vision.cache`.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such file or directory")
    if cache not in disk_cache.MODES:
        raise DataError(f"cache: {cache!r}; use one of {', '.join(disk_cache.MODES)}")
    source = path = None
    if cache != "memory":
        if cache_dir is None:
            raise DataError(f"cache {cache}: no cache directory given (--cache-dir)")
        path = disk_cache.cache_path(
            Path(cache_dir), root, image_size=image_size, classes=classes, labelled=labelled, max_pixels=max_pixels
        )
        source = disk_cache.fingerprint(root)
        if cache == "disk" and (meta := disk_cache.valid(path, source)) is not None:
            return _from_cache(path, meta, root)
    with open_files(root, max_file_bytes=max_file_bytes) as entries:
        index = None
        if labelled:
            entries = _strip_common_top(entries)
            names = sorted({e.rel[0] for e in entries if len(e.rel) >= 2})
            classes = list(classes) if classes is not None else names
            if not classes:
                raise DataError(f"{root}: no class folders found; expected ImageFolder layout root/<class>/<image>")
            index = {c: i for i, c in enumerate(classes)}
        kw = dict(image_size=image_size, max_pixels=max_pixels, desc=f"decoding {root.name}", progress=progress)
        decoded = _decoded(entries, index=index, **kw)
        if disk_cache.choose_mode(cache, len(entries), image_size) == "disk":
            assert path is not None and source is not None
            images, labels, sizes, meta = disk_cache.build_or_open(
                path, source, lambda: (decoded, list(classes or []), len(entries)), image_size=image_size
            )
            return _from_cache(path, meta, root, (images, labels, sizes))
        return _decode_to_memory(root, decoded, len(entries), list(classes or []), image_size)


def _decode_to_memory(root: Path, decoded: Iterator[Any], bound: int, classes: list[str], image_size: int) -> ImageSet:
    """Decode into one preallocated ``uint8[bound, 3, S, S]`` buffer (no list-then-stack copy: the peak is one
    set, not two), keeping the first ``n`` rows that decoded."""
    buf = np.empty((bound, 3, image_size, image_size), dtype=np.uint8)  # pages are only touched as they fill
    labels: list[int] = []
    paths: list[str] = []
    sizes: list[tuple[int, int]] = []
    problems: list[Problem] = []
    for where, label, arr, wh, problem in decoded:
        if problem is not None:
            problems.append(Problem(where, problem))
            continue
        buf[len(labels)] = arr
        labels.append(label)
        paths.append(where)
        sizes.append(wh)
    _log_problems(root, problems, len(labels))
    if not labels:
        detail = f"; first problem: {problems[0].path}: {problems[0].reason}" if problems else ""
        raise DataError(f"{root}: no readable images ({len(problems)} file(s) skipped){detail}")
    return ImageSet(
        torch.from_numpy(buf[: len(labels)]),
        torch.tensor(labels, dtype=torch.int64),
        classes,
        paths,
        np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
        problems,
    )


def _from_cache(
    path: Path, meta: dict[str, Any], root: Path, opened: tuple[DiskImages, np.ndarray, np.ndarray] | None = None
) -> ImageSet:
    """The :class:`ImageSet` of a valid cache file (its skipped files reported again, as a fresh decode would)."""
    images, labels, sizes = opened or disk_cache.open_cache(path, meta)
    problems = [Problem(p["path"], p["reason"]) for p in meta["problems"]]
    _log_problems(root, problems, meta["n"])
    if not meta["n"]:
        detail = f"; first problem: {problems[0].path}: {problems[0].reason}" if problems else ""
        raise DataError(f"{root}: no readable images ({len(problems)} file(s) skipped){detail}")
    return ImageSet(images, torch.from_numpy(labels), list(meta["classes"]), list(meta["paths"]), sizes, problems)


def iter_images(
    root: str | Path,
    *,
    image_size: int,
    chunksize: int = 1000,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    progress: bool = True,
) -> Iterator[ImageSet]:
    """Every file under ``root`` as unlabelled images, in chunks of at most ``chunksize`` decoded images (each
    chunk carries the problems met since the previous one; the last may hold only problems): memory stays bounded
    by one file plus one chunk, whatever the size of the folder or archive."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such file or directory")
    if chunksize < 1:
        raise ValueError(f"chunksize {chunksize}: must be >= 1")
    arrays: list[np.ndarray] = []
    paths: list[str] = []
    sizes: list[tuple[int, int]] = []
    problems: list[Problem] = []
    n_images = n_problems = 0
    with open_files(root, max_file_bytes=max_file_bytes) as entries:
        kw = dict(image_size=image_size, max_pixels=max_pixels, desc=f"decoding {root.name}", progress=progress)
        for where, _, arr, wh, problem in _decoded(entries, index=None, **kw):
            if problem is not None:
                log.warning("skipped %s: %s", where, problem)
                problems.append(Problem(where, problem))
                n_problems += 1
                continue
            arrays.append(arr)
            paths.append(where)
            sizes.append(wh)
            n_images += 1
            if len(arrays) == chunksize:
                yield _image_set(arrays, [-1] * len(arrays), [], paths, sizes, problems, image_size)
                arrays, paths, sizes, problems = [], [], [], []
    if arrays or problems:
        yield _image_set(arrays, [-1] * len(arrays), [], paths, sizes, problems, image_size)
    if n_problems:
        log.warning("%s: %d file(s) skipped, %d images read", root, n_problems, n_images)


def _log_problems(root: Path, problems: list[Problem], n_images: int) -> None:
    for p in problems:
        log.warning("skipped %s: %s", p.path, p.reason)
    if problems:
        log.warning("%s: %d file(s) skipped, %d images read", root, len(problems), n_images)


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


def _data_dir(data_dir: str | Path | None) -> Path:
    """``data_dir``, or the workspace's (``$MLREF_DATA_DIR``) when a caller gives none."""
    if data_dir is not None:
        return Path(data_dir)
    from common.workspace import Workspace

    return Workspace.from_env().data_dir


def cifar10_dir(data_dir: str | Path | None = None) -> Path:
    return _data_dir(data_dir) / "cifar10-jpeg"


def _torchvision_cifar(image_size: int, train: bool, data_dir: Path) -> ImageSet:
    import torchvision

    root = data_dir / "cifar10"
    try:
        ds = torchvision.datasets.CIFAR10(str(root), train=train, download=True)  # md5-checked by torchvision
    except Exception as exc:  # noqa: BLE001 - urllib/HTTP errors of every kind mean "could not fetch"
        raise DownloadError(
            f"CIFAR-10 is not in {cifar10_dir(data_dir)} and could not be downloaded ({exc}); put the "
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
    data_dir: str | Path | None = None,
    cache: str = "memory",
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Read ``dataset`` (see the module docstring); a given test split keeps the training set's classes.
    ``data_dir``: where ``cifar10`` is looked for (the workspace's data directory). ``cache`` / ``cache_dir``:
    where decoded folders and archives live (:func:`read_folder`; the embedded sets are always in memory)."""
    if dataset is None or str(dataset) == DIGITS:
        return Dataset(DIGITS, digits(image_size))
    if str(dataset) in (CIFAR10, "cifar10-jpeg"):
        base = _data_dir(data_dir)
        root = cifar10_dir(base)
        if _split_entry(root, "train") is None:
            return Dataset(
                CIFAR10, _torchvision_cifar(image_size, True, base), _torchvision_cifar(image_size, False, base)
            )
        dataset = root
    root = Path(dataset).expanduser()
    if not root.exists():
        raise DataError(
            f"--dataset {dataset}: no such file or directory (an ImageFolder directory, a .tar/.tar.gz/"
            f".zip of one, a folder with train/ and test/, '{DIGITS}' or '{CIFAR10}')"
        )
    name = root.name.split(".")[0] if is_archive(root) else root.name
    kw = dict(image_size=image_size, max_pixels=max_pixels, progress=progress, cache=cache, cache_dir=cache_dir)
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
    digests = [
        int.from_bytes(hashlib.blake2b(a.tobytes(), digest_size=8).digest(), "little")
        for chunk in images.images.split(4096)  # a chunk at a time: the disk cache is never read whole
        for a in chunk.contiguous().numpy()
    ]
    return np.array(digests, dtype=np.uint64)


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


@dataclass
class Images:
    """A dataset ready for the pipeline (what ``VisionApp.load_data`` returns): the decoded dataset, its name in
    reports and tags, what ``--dataset`` said (to decode it again at another size), and the stratified
    train/validation/test split."""

    name: str
    source: str | None
    dataset: Dataset
    train: ImageSet
    val: ImageSet
    test: ImageSet

    @classmethod
    def split(
        cls, name: str, source: str | None, ds: Dataset, val_fraction: float, test_fraction: float, seed: int
    ) -> Images:
        tr, va, te = train_val_test(ds, val_fraction, test_fraction, seed)
        return cls(name, source, ds, tr, va, te)


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
