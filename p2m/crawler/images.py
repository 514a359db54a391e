"""Image checks and storage: magic bytes, Pillow verify + decode under a pixel cap, EXIF orientation, hashes."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps

from p2m.io import write_bytes

# (prefix, offset, format, extension)
_MAGIC = (
    (b"\xff\xd8\xff", 0, "JPEG", "jpg"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG", "png"),
    (b"GIF87a", 0, "GIF", "gif"),
    (b"GIF89a", 0, "GIF", "gif"),
    (b"BM", 0, "BMP", "bmp"),
    (b"II*\x00", 0, "TIFF", "tif"),
    (b"MM\x00*", 0, "TIFF", "tif"),
)
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}


class ImageRejected(Exception):
    """The bytes are not an image this crawler keeps; ``reason`` is the one-line why, ``key`` a stat key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


def sniff_format(data: bytes) -> str | None:
    """The image format named by the first bytes (``JPEG``, ``PNG``, ``GIF``, ``WEBP``, ``BMP``, ``TIFF``) or None."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for prefix, offset, fmt, _ in _MAGIC:
        if data[offset : offset + len(prefix)] == prefix:
            return fmt
    return None


def describe_non_image(data: bytes) -> str:
    """A short description of bytes that are not a known image (for the rejection reason)."""
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "HTML"
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "SVG (vector images are not kept)"
    if head.startswith((b"<?xml", b"<")):
        return "XML/text"
    if head.startswith((b"{", b"[")):
        return "JSON/text"
    if not data:
        return "an empty body"
    return f"unknown bytes {data[:8].hex()}"


@dataclass
class CheckedImage:
    """An image that passed every check.

    Attributes:
        data: the bytes to store (the fetched bytes, or a re-encoding when EXIF rotation was applied).
        sha256: hex SHA-256 of ``data`` (the file name).
        format: Pillow format name (``JPEG``...).
        ext: file extension without dot.
        width, height: size in pixels after EXIF orientation.
        phash: 64-bit perceptual hash as 16 hex digits (``imagehash.phash``).
        rotated: True when EXIF orientation was applied.
        preview: RGB uint8 array (H, W, 3), longest side at most 512 px, for the person filter.
    """

    data: bytes
    sha256: str
    format: str
    ext: str
    width: int
    height: int
    phash: str
    rotated: bool
    preview: np.ndarray


def check_image(
    data: bytes,
    *,
    min_size: int = 64,
    max_pixels: int = 40_000_000,
    declared_type: str = "",
    preview: bool = True,
    sha256: str | None = None,
) -> CheckedImage:
    """Decide whether ``data`` is a usable image, and prepare it for storage.

    Steps: magic bytes (the Content-Type header is not trusted), Pillow ``verify()``, the pixel
    cap read from the header before any decode, a decode of the whole stream (catches truncation;
    JPEGs without EXIF rotation decode at reduced scale, which reads every byte but skips most of
    the pixel work), EXIF orientation, the minimum side, and the perceptual hash (``imagehash.phash``
    of the decoded picture).

    Args:
        data: the fetched bytes.
        min_size: smallest accepted width and height, pixels.
        max_pixels: largest accepted width * height (checked before decoding).
        declared_type: the Content-Type header, only used in messages.
        preview: also return a small RGB copy (for the person filter); otherwise ``preview`` is empty.
        sha256: the hex SHA-256 of ``data`` when the caller has it (not computed again unless EXIF rotation
            changes the bytes).

    Raises:
        ImageRejected: with a one-line reason and a stat key.
    """
    fmt = sniff_format(data)
    if fmt is None:
        what = describe_non_image(data)
        served = f" served as {declared_type}" if declared_type else ""
        raise ImageRejected("not_image", f"not an image: {what}{served}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if width * height > max_pixels:
                    raise ImageRejected(
                        "too_many_pixels",
                        f"{width}x{height} = {width * height} pixels over the {max_pixels}-pixel cap",
                    )
                probe.verify()
            with Image.open(io.BytesIO(data)) as im:
                orientation = im.getexif().get(0x0112, 1)
                rotated = orientation not in (1, None) and orientation in range(2, 9)
                if fmt == "JPEG" and not rotated:
                    # Decode at 1/2..1/8 scale in the DCT domain (3-4x faster): the whole bitstream is still
                    # read, so truncation and corruption show as in a full decode; the hash and preview need
                    # no more pixels. The size stays the header's.
                    im.draft(im.mode, (512, 512) if preview else (64, 64))
                im.load()
                if rotated:
                    im = ImageOps.exif_transpose(im)
                    data = _reencode(im, fmt)
                    width, height = im.size
                if min(width, height) < min_size:
                    raise ImageRejected(
                        "too_small", f"{width}x{height} smaller than --min-size {min_size} px"
                    )
                phash = str(imagehash.phash(im))
                if preview:
                    small = im.convert("RGB")
                    small.thumbnail((512, 512))
                    thumb = np.asarray(small)
                else:
                    thumb = np.zeros((0, 0, 3), np.uint8)
        except ImageRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("too_many_pixels", f"decompression bomb: {exc}") from exc
        except Image.UnidentifiedImageError as exc:
            raise ImageRejected("corrupt", f"corrupt {fmt} image: Pillow cannot identify it") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            text = str(exc) or type(exc).__name__
            key = "truncated" if "truncat" in text.lower() else "corrupt"
            raise ImageRejected(key, f"{key} {fmt} image: {text.splitlines()[0][:160]}") from exc
    digest = sha256 if sha256 is not None and not rotated else hashlib.sha256(data).hexdigest()
    return CheckedImage(
        data=data,
        sha256=digest,
        format=fmt,
        ext=EXTENSIONS[fmt],
        width=width,
        height=height,
        phash=phash,
        rotated=rotated,
        preview=thumb,
    )


def _reencode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.convert("RGB").save(buf, "JPEG", quality=95, optimize=True)
    elif fmt in ("PNG", "WEBP", "TIFF", "BMP"):
        im.save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    else:  # GIF and others: PNG keeps every pixel
        im.save(buf, "PNG")
    return buf.getvalue()


def image_relpath(sha256: str, ext: str) -> str:
    """Where an image lives under the crawl folder: ``images/ab/abcdef....jpg`` (content-addressed)."""
    return f"images/{sha256[:2]}/{sha256}.{ext}"


def store_image(root: Path, checked: CheckedImage) -> tuple[str, bool]:
    """Write ``checked.data`` under ``root`` (atomically) unless the same content is already there.

    Returns:
        ``(relative path, True when a new file was written)``.
    """
    rel = image_relpath(checked.sha256, checked.ext)
    path = root / rel
    if path.exists() and path.stat().st_size == len(checked.data):
        return rel, False
    write_bytes(path, checked.data)
    return rel, True


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hex hashes of equal length."""
    return bin(int(a, 16) ^ int(b, 16)).count("1")


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 in ``x``."""
    return _POPCOUNT[x.view(np.uint8)].reshape(-1, 8).sum(axis=1)


def near_duplicate_groups(phashes: list[str], max_distance: int = 6) -> list[int]:
    """Group 64-bit perceptual hashes whose Hamming distance is at most ``max_distance`` (transitively).

    Uses the pigeonhole trick: two hashes within ``d`` bits agree exactly on at least one of
    ``d + 1`` disjoint bit blocks, so only hashes that share a block are compared (with numpy,
    one bucket at a time).

    Args:
        phashes: N hex strings (16 hex digits each).
        max_distance: largest Hamming distance counted as a near-duplicate (0..63).

    Returns:
        N group ids: the index of the first member of each element's group.
    """
    n = len(phashes)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    values = np.array([int(h, 16) for h in phashes], np.uint64)
    blocks = max_distance + 1
    bounds = [round(64 * k / blocks) for k in range(blocks + 1)]
    for b in range(blocks):
        lo, hi = bounds[b], bounds[b + 1]
        keys = (values >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        sizes = np.diff(np.r_[starts, n])
        for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
            members = order[start : start + size]
            x, y = np.triu_indices(size, 1)
            close = _popcount(values[members[x]] ^ values[members[y]]) <= max_distance
            for i, j in zip(members[x[close]].tolist(), members[y[close]].tolist()):
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(n)]
