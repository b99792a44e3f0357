"""Minimal dependency-free PNG writer/reader and an image-grid helper (numpy + stdlib only)."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = [
    "image_grid",
    "image_problem",
    "read_png",
    "read_png_text",
    "to_uint8",
    "write_image",
    "write_png",
]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_CHANNELS = {0: 1, 2: 3}  # PNG colour type -> channels (grey, RGB), 8-bit only
_GRID_GREY = 128


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _text_chunk(key: str, value: str) -> bytes:
    """A tEXt chunk: a Latin-1 keyword of 1 to 79 characters, a NUL, a Latin-1 value."""
    if not isinstance(key, str) or not isinstance(value, str):
        raise TypeError(f"text must map str to str; got {key!r}: {value!r}")
    try:
        keyword, text = key.encode("latin-1"), value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(
            f"text {key!r}: {value!r} is not Latin-1, which PNG's tEXt chunks hold"
        ) from None
    if not 1 <= len(keyword) <= 79 or key != key.strip() or b"\0" in keyword + text:
        raise ValueError(
            f"text key {key!r}: a PNG keyword has 1 to 79 characters, no leading or trailing "
            f"spaces and no NUL (nor has its value)"
        )
    return _chunk(b"tEXt", keyword + b"\0" + text)


def write_png(
    path: str | os.PathLike[str], image: np.ndarray, text: Mapping[str, str] | None = None
) -> None:
    """Write a uint8 image, ``(H, W)`` grayscale or ``(H, W, 3)`` RGB, as an 8-bit PNG;
    ``text`` (e.g. ``{"Title": ..., "Description": ...}``) is stored as tEXt chunks, which
    `read_png_text` and image viewers' "properties" read back."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must have dtype uint8, got {image.dtype}")
    if image.ndim == 2:
        color_type = 0
    elif image.ndim == 3 and image.shape[2] == 3:
        color_type = 2
    else:
        raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {image.shape}")
    height, width = image.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(f"image must be non-empty, got shape {image.shape}")
    rows = np.ascontiguousarray(image).reshape(height, -1)
    # Every scanline is prefixed by its filter type; 0 (None) keeps the writer trivial.
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    data = (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + b"".join(_text_chunk(k, v) for k, v in (text or {}).items())
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )
    with open(path, "wb") as fh:
        fh.write(data)


def _pillow_formats() -> dict[str, str]:
    """File suffixes Pillow can write (e.g. '.jpg' -> 'JPEG'); empty without Pillow."""
    try:
        from PIL import Image
    except ImportError:  # Pillow is optional: PNG needs nothing beyond numpy
        return {}
    Image.init()
    return {ext: fmt for ext, fmt in Image.EXTENSION.items() if fmt in Image.SAVE}


def image_problem(path: str | os.PathLike[str]) -> str:
    """Why an image cannot be written under `path`'s name, or '': its suffix must say
    the format (.png always; others when Pillow is installed and writes them)."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix == ".png":
        return ""
    formats = _pillow_formats()
    if suffix in formats:
        return ""
    if not suffix:
        return "has no file suffix to say the image format; end it in .png"
    if formats:
        return f"ends in {suffix!r}, which Pillow cannot write; use .png, .jpg, .webp, ..."
    return f"ends in {suffix!r}: without Pillow (pip install pillow) only .png is written"


def write_image(
    path: str | os.PathLike[str], image: np.ndarray, text: Mapping[str, str] | None = None
) -> None:
    """Write a uint8 image in the format its suffix names: PNG by `write_png` (with
    ``text`` as its tEXt chunks), anything else through Pillow, without ``text``
    (ValueError where `image_problem` says it cannot be written)."""
    problem = image_problem(path)
    if problem:
        raise ValueError(f"{os.fspath(path)} {problem}")
    if os.path.splitext(os.fspath(path))[1].lower() == ".png":
        write_png(path, image, text)
        return
    from PIL import Image

    Image.fromarray(image).save(path)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    """Undo per-scanline PNG filters; returns ``(height, stride)`` uint8."""
    if len(raw) != height * (stride + 1):
        raise ValueError(f"PNG image data has {len(raw)} bytes, expected {height * (stride + 1)}")
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int64)
    for i in range(height):
        start = i * (stride + 1)
        ftype = raw[start]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=start + 1).astype(np.int64)
        if ftype == 0:
            cur = line
        elif ftype == 2:  # Up
            cur = (line + prev) & 0xFF
        elif ftype in (1, 3, 4):  # Sub / Average / Paeth depend on the left neighbour
            vals = line.tolist()
            up = prev.tolist()
            for j in range(stride):
                left = vals[j - bpp] if j >= bpp else 0
                if ftype == 1:
                    pred = left
                elif ftype == 3:
                    pred = (left + up[j]) >> 1
                else:
                    pred = _paeth(left, up[j], up[j - bpp] if j >= bpp else 0)
                vals[j] = (vals[j] + pred) & 0xFF
            cur = np.asarray(vals, dtype=np.int64)
        else:
            raise ValueError(f"unsupported PNG filter type {ftype} in row {i}")
        out[i] = cur
        prev = cur
    return out


def _chunks(path: str | os.PathLike[str]) -> Iterator[tuple[bytes, bytes]]:
    """The (kind, payload) of each chunk of the PNG file at `path`, up to IEND, CRCs checked."""
    with open(path, "rb") as fh:
        data = fh.read()
    if not data.startswith(_SIGNATURE):
        raise ValueError(f"path {os.fspath(path)!r} is not a PNG file (bad signature)")
    pos = len(_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + payload) & 0xFFFFFFFF != crc:
            raise ValueError(f"PNG chunk {kind!r} has a bad CRC")
        pos += 12 + length
        if kind == b"IEND":
            return
        yield kind, payload


def read_png_text(path: str | os.PathLike[str]) -> dict[str, str]:
    """The tEXt chunks of a PNG file as ``{keyword: text}`` (Latin-1), in file order."""
    texts = {}
    for kind, payload in _chunks(path):
        if kind == b"tEXt":
            key, _, value = payload.partition(b"\0")
            texts[key.decode("latin-1")] = value.decode("latin-1")
    return texts


def read_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an 8-bit, non-interlaced grayscale or RGB PNG to ``(H, W)`` / ``(H, W, 3)`` uint8."""
    header: tuple[Any, ...] | None = None
    idat = bytearray()
    for kind, payload in _chunks(path):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat += payload
    if header is None:
        raise ValueError("PNG has no IHDR chunk")
    width, height, depth, color_type, _, _, interlace = header
    if depth != 8 or color_type not in _COLOR_CHANNELS or interlace != 0:
        raise ValueError(
            f"only 8-bit non-interlaced grey/RGB PNGs are supported, got depth={depth}, "
            f"color_type={color_type}, interlace={interlace}"
        )
    channels = _COLOR_CHANNELS[color_type]
    pixels = _unfilter(zlib.decompress(bytes(idat)), height, width * channels, channels)
    return pixels.reshape(height, width) if channels == 1 else pixels.reshape(height, width, 3)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] to uint8 pixels, rounded to nearest (clipped outside the range)."""
    # NaN would make the uint8 cast undefined; show it as mid-grey (0 in [-1, 1]).
    arr = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), -1.0, 1.0)
    return np.rint((arr + 1.0) * 127.5).astype(np.uint8)


def image_grid(images: Any, nrow: int = 8, padding: int = 1, scale: int = 4) -> np.ndarray:
    """Tile images ``(N, C, H, W)`` (C in {1, 3}, values in [-1, 1]) into one uint8 image.

    ``nrow`` images per grid row; ``padding`` mid-grey pixels between tiles (before
    upscaling); the whole grid is then upscaled ``scale`` times by pixel repetition. Returns
    ``(rows, cols)`` for C = 1 or ``(rows, cols, 3)`` for C = 3. Accepts numpy arrays or torch
    tensors (converted via ``.detach().cpu().numpy()``, so torch is not imported here).
    """
    if hasattr(images, "detach"):
        images = images.detach().cpu().float().numpy()
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3) or arr.shape[0] < 1:
        raise ValueError(
            f"images must have shape (N, C, H, W) with N >= 1, C in {{1, 3}}, got {arr.shape}"
        )
    for name, value, low in (("nrow", nrow, 1), ("padding", padding, 0), ("scale", scale, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    n, ch, h, w = arr.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    tiles = to_uint8(arr)
    grid = np.full(
        (ch, rows * h + (rows - 1) * padding, cols * w + (cols - 1) * padding),
        _GRID_GREY,
        dtype=np.uint8,
    )
    for idx in range(n):
        top, left = (idx // cols) * (h + padding), (idx % cols) * (w + padding)
        grid[:, top : top + h, left : left + w] = tiles[idx]
    grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
    return grid[0] if ch == 1 else np.ascontiguousarray(grid.transpose(1, 2, 0))
