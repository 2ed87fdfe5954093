"""File helpers: atomic writes (a result or checkpoint is complete or absent, never half-written)
and PNG decoding that names a bad file."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from utils.errors import BadInput


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps the final suffix (Keras and OpenCV choose the format by it).
    On any exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give the result the usual mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON (indented, NaN allowed as in the official Cityscapes output) atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and check that files can be written there; raise BadInput naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise BadInput(
            f"cannot write to folder {str(path)!r} ({exc.strerror or exc}); "
            "choose another output folder"
        ) from exc
    return path


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path: str | os.PathLike, what: str = "file") -> Any:
    """Decode a PNG as stored: (H, W) or (H, W, C), uint8 or uint16 (palette PNGs come back RGB).

    Decodes with imagecodecs (libpng; it inflates with the system's zlib, or TensorFlow's bundled
    zlib once TensorFlow is imported), about 1.25x faster here than OpenCV 5's bundled libpng
    on Cityscapes-size files (`results/benchmark_data.md`). A missing, truncated
    or corrupt file raises BadInput naming it as `what`.
    """
    # image libraries only when images are read
    import imagecodecs

    path = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None
    if not data.startswith(PNG_SIGNATURE):
        raise BadInput(f"cannot read {what} {path!r}: not a PNG file")
    try:
        return imagecodecs.png_decode(data)
    # what imagecodecs raises for a bad file: PngError (libpng's error), ValueError (a libpng
    # message that is not UTF-8 comes back as UnicodeDecodeError; an unsupported PNG format),
    # MemoryError (a header that declares a size no memory holds, e.g. 1000000x1000000)
    except (imagecodecs.PngError, ValueError, MemoryError) as exc:
        raise BadInput(f"cannot read {what} {path!r}: corrupt or truncated PNG ({exc})") from None


_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3


def reuse_freed_buffers() -> None:
    """Keep freed image-size buffers in this process's heap (glibc) so the next image reuses them.

    By default glibc serves large blocks (above its mmap threshold, 128 KB to 32 MB) straight
    from the kernel and gives them back when freed, so every decoded or resized 1024x2048 image
    faults its pages in again: here a quarter of the evaluation's decoding time and a fifth of
    the training pipeline's time went to the kernel. With high trim and mmap thresholds the next image reuses the same
    memory; the process keeps up to 512 MB of freed memory in return. Process-wide and
    idempotent; does nothing off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_TRIM_THRESHOLD, 512 << 20)
        libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)
    except (OSError, AttributeError):  # not glibc: keep the defaults
        pass
