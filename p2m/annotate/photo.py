"""Single photos as dataset frames: reading images safely, the camera of a photo (EXIF focal or a default), placing files.

A single photo has its own camera with R = I, t = 0 (world = camera frame, DESIGN.md Contract 1), the principal
point at the image centre and a focal length taken, in this order, from:

1. EXIF ``FocalLengthIn35mmFilm`` (tag 0xA405): ``f_px = f35 * diagonal_px / 43.27`` (43.27 mm is the diagonal of
   a 36 x 24 mm frame; the 35 mm equivalent is defined on the diagonal, so this holds for any aspect ratio);
2. otherwise :func:`default_focal`: ``f_px = diagonal_px = sqrt(W^2 + H^2)``, the rule CLIFF (Li et al., ECCV
   2022) uses for photos of unknown focal length: a 53 degree diagonal field of view, i.e. a 43 mm lens in
   35 mm terms, close to what phone and kit-zoom photos of people have.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2m.camera import Camera
from p2m.errors import P2MError
from p2m.io import atomic_write, read_json

logger = logging.getLogger(__name__)

#: File suffixes treated as images when a source is a plain folder.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
#: Diagonal of a 36 x 24 mm frame, mm.
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
#: Largest image (pixels) decoded; bigger files are refused rather than exhausting memory.
MAX_PIXELS = 80_000_000
_EXIF_IFD = 0x8769
_TAG_FOCAL_35MM = 0xA405
_TAG_ORIENTATION = 0x0112


class ImageReadError(P2MError):
    """An image file cannot be read (missing, not an image, truncated, too large)."""


#: Largest image width or height an import accepts (px): far above any camera, far below what overflows floats.
MAX_IMAGE_SIDE = 1_000_000


def default_focal(width: int, height: int) -> float:
    """The focal length (px) given to a photo without EXIF focal: its diagonal, ``sqrt(W^2 + H^2)``."""
    return float(math.hypot(width, height))


def focal_from_35mm(focal_35mm: float, width: int, height: int) -> float:
    """Convert a 35 mm equivalent focal length (mm) to pixels of a W x H image (diagonal rule)."""
    return float(focal_35mm) * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM


def single_photo_camera(width: int, height: int, focal_35mm: float | None = None) -> tuple[Camera, str]:
    """The camera of a single photo: R = I, t = 0, c = image centre, f from EXIF or :func:`default_focal`.

    Args:
        width, height: image size in px.
        focal_35mm: EXIF FocalLengthIn35mmFilm (mm), or None.

    Returns:
        (camera, source) where source is ``"exif_35mm"`` or ``"default_diagonal"``.
    """
    if focal_35mm is not None and focal_35mm > 0:
        f, source = focal_from_35mm(focal_35mm, width, height), "exif_35mm"
    else:
        f, source = default_focal(width, height), "default_diagonal"
    # Pixel centres are integers (p2m.render, COCO keypoints): the centre of a W-wide image is (W - 1) / 2.
    return Camera.identity(f=[f, f], c=[(width - 1) / 2.0, (height - 1) / 2.0]), source


@dataclass
class Photo:
    """A decoded image.

    Attributes:
        path: the file read.
        rgb: (H, W, 3) uint8, upright (EXIF orientation applied).
        width, height: size of ``rgb`` in px.
        focal_35mm: EXIF FocalLengthIn35mmFilm in mm, or None.
        rotated: True when an EXIF orientation other than 1 was applied (the file's pixels are not upright).
        format: Pillow's format name (``JPEG``, ``PNG``...).
    """

    path: Path
    rgb: np.ndarray
    width: int
    height: int
    focal_35mm: float | None
    rotated: bool
    format: str


def read_photo(path: str | Path) -> Photo:
    """Decode an image fully (catches truncated files) and apply its EXIF orientation.

    Raises:
        ImageReadError: naming the file and what is wrong with it.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageReadError(
                    f"{path}: {im.width}x{im.height} px is more than the {MAX_PIXELS:,} px p2m decodes"
                )
            fmt = im.format or "?"
            exif = im.getexif()
            orientation = exif.get(_TAG_ORIENTATION, 1)
            focal = exif.get_ifd(_EXIF_IFD).get(_TAG_FOCAL_35MM)
            im.load()
            upright = ImageOps.exif_transpose(im) if orientation not in (1, None) else im
            rgb = np.asarray(upright.convert("RGB"))
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: file not found") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{path}: not an image (Pillow cannot identify it)") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from exc
    try:
        focal_35mm = float(focal) if focal else None
    except (TypeError, ValueError):
        focal_35mm = None
    return Photo(path, rgb, rgb.shape[1], rgb.shape[0], focal_35mm, orientation not in (1, None), fmt)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def place_image(src: Path, images_dir: Path, rel: str, photo: Photo | None = None) -> str:
    """Put ``src`` at ``images_dir/rel`` (hard link, else an atomic copy) and return the relative name used.

    A file already there with the same bytes is kept. One with other bytes is never overwritten: the image goes
    to ``<stem>-<sha8><suffix>`` beside it instead. When ``photo.rotated`` the upright pixels are stored (PNG
    for lossless formats, JPEG quality 95 otherwise) so that the stored file needs no EXIF orientation.

    Args:
        src: the source file.
        images_dir: the dataset's ``images/`` folder.
        rel: wanted path relative to ``images_dir`` (forward slashes).
        photo: the decoded image, when it is already at hand.

    A hard link shares its bytes with the source: replace source files (new file, same name) rather than
    editing them in place while the dataset is in use.

    Returns:
        The path relative to ``images_dir`` where the image now is.
    """
    data: bytes | None = None
    if photo is not None and photo.rotated:
        from PIL import Image

        buf = io.BytesIO()
        lossless = photo.format in ("PNG", "BMP", "TIFF", "GIF", "WEBP")
        Image.fromarray(photo.rgb).save(buf, "PNG" if lossless else "JPEG", quality=95)
        data = buf.getvalue()
        rel = str(Path(rel).with_suffix(".png" if lossless else ".jpg"))
    digest = hashlib.sha256(data).hexdigest() if data is not None else file_sha256(src)
    target = images_dir / rel
    if target.exists():
        if file_sha256(target) == digest:
            return rel
        p = Path(rel)
        rel = str(p.with_name(f"{p.stem}-{digest[:8]}{p.suffix}"))
        target = images_dir / rel
        if target.exists() and file_sha256(target) == digest:
            return rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if data is not None:
        with atomic_write(target, "wb") as fh:
            fh.write(data)
        return rel
    try:
        os.link(src, target)
    except OSError:  # other file system, or not allowed (protected_hardlinks): copy
        with open(src, "rb") as fin, atomic_write(target, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    return rel


def check_image_file(path: Path, width: int | None, height: int | None, where: str) -> float | None:
    """Check that ``path`` is an image of the recorded size by reading its header; return its EXIF 35 mm focal.

    Args:
        path: the image file.
        width, height: the size the annotation file records (px), or None to skip the size check.
        where: the record, for messages (``"test_coco.json: image id 785"``).

    Raises:
        ImageReadError: the file is missing, not an image, or not ``width`` x ``height`` (message names
            ``where``, the field and the file).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            size = im.size
            exif = im.getexif()
            focal = exif.get_ifd(_EXIF_IFD).get(_TAG_FOCAL_35MM)
    except FileNotFoundError as exc:
        raise ImageReadError(f"{where}: field 'file_name': no such image file {path}") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{where}: field 'file_name': {path} is not an image") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(
            f"{where}: field 'file_name': {path} is unreadable ({type(exc).__name__}: {exc})"
        ) from exc
    for field, want, got in (("width", width, size[0]), ("height", height, size[1])):
        if want is not None and want != got:
            raise ImageReadError(f"{where}: field {field!r} = {want}, but {path} is {size[0]}x{size[1]} px")
    try:
        return float(focal) if focal else None
    except (TypeError, ValueError):
        return None


def next_photo_index(root: Path, name: str, subject: int) -> int:
    """The next free cam_idx / frame_idx of a subject of single photos (1 when the subject has no data file)."""
    from p2m.layout import subject_file

    path = subject_file(root, name, subject, "data")
    if not path.exists():
        return 1
    data = read_json(path)
    images = data.get("images", []) if isinstance(data, dict) else []
    used = [
        img[k]
        for img in images
        if isinstance(img, dict)
        for k in ("cam_idx", "frame_idx")
        if isinstance(img.get(k), int)
    ]
    return max(used, default=0) + 1
