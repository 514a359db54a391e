"""Turn one person of the dataset layout into the members of a shard sample: key, .json, .npz, .jpg.

Sample format (DESIGN.md Contract 2, schema version 1):

- key: ``{source}_s{subject:03d}_a{action:03d}_sa{subaction:03d}_c{cam:04d}_f{frame:06d}_p{person:02d}``;
  the source name is sanitised (every character outside ``[A-Za-z0-9_-]`` becomes ``-``), so a key never
  holds a dot (WebDataset cuts keys at the first dot). ``person`` is the annotation's position among the
  annotations of its image, in file order.
- ``.npz`` (stored zip of float32 ``.npy`` entries):
  ``j2d`` (17, 3) px + visibility; ``j3d`` (17, 3) camera-frame mm (when known); ``bbox`` (4,) [x, y, w, h] px;
  ``cam`` (4,) [fx, fy, cx, cy] px (when the camera is known); ``pose``, ``shape``, ``trans`` as the dataset
  stores them (their shapes depend on the body model and rig) with ``model`` (0-d unicode array, the body
  model id ``name`` or ``name/rig``) when body parameters are known.
- ``.json``: key, source, image/annotation ids, subject, action, subaction, cam, frame, person, file name,
  image width/height, bbox, the camera dict (R, t mm, f, c[, k, p]), body model/rig, crop box when a crop is
  stored, plus ``source_url``/``license`` of crawled images.
- ``.jpg`` (``with_images``): the person crop (square, ``crop_margin`` around the bbox, ``crop_size`` px) or the
  whole frame (its original bytes when it is a JPEG and no ``max_side`` applies). Joints stay in frame pixels;
  the json's ``crop`` gives ``[x0, y0, side]`` so that ``(u - x0) * crop_size / side`` maps into the crop.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from p2m.shards.codec import encode_npz, tar_member

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sanitize_key_part(text: str) -> str:
    """Replace every run of characters outside ``[A-Za-z0-9_-]`` (dots included) by ``-``.

    ``"S1_Directions_1.54138969_000001"`` becomes ``"S1_Directions_1-54138969_000001"``.
    """
    out = _UNSAFE.sub("-", str(text)).strip("-")
    return out or "x"


def sample_key(source: str, subject: int, action: int, subaction: int, cam: int, frame: int, person: int) -> str:
    """The dot-free, zero-padded key of one person (see the module docstring)."""
    return (
        f"{sanitize_key_part(source)}_s{int(subject):03d}_a{int(action):03d}_sa{int(subaction):03d}"
        f"_c{int(cam):04d}_f{int(frame):06d}_p{int(person):02d}"
    )


@dataclass(frozen=True)
class EncodeOptions:
    """What goes into each sample besides the pose.

    Attributes:
        with_images: store a ``.jpg``.
        crop: store the person crop instead of the frame.
        crop_size: side of the square crop in px.
        crop_margin: fraction of the bbox's longer side added on each side of the crop.
        jpeg_quality: JPEG quality (1-95) for re-encoded images.
        max_side: frames whose longer side exceeds this are downscaled and re-encoded (None: keep as is).
    """

    with_images: bool = False
    crop: bool = False
    crop_size: int = 256
    crop_margin: float = 0.2
    jpeg_quality: int = 90
    max_side: int | None = None

    def to_config(self) -> dict[str, Any]:
        """The options that decide the bytes of an image member (recorded in index.json)."""
        cfg: dict[str, Any] = {"with_images": self.with_images, "crop": self.crop}
        if self.with_images:
            cfg["jpeg_quality"] = self.jpeg_quality
            if self.crop:
                cfg.update(crop_size=self.crop_size, crop_margin=self.crop_margin)
            else:
                cfg["max_side"] = self.max_side
        return cfg


@dataclass
class Job:
    """One person to encode (picklable, so it can go to a worker process).

    Attributes:
        split: the split it goes to.
        key: its sample key.
        source: the dataset name.
        person: its position among the annotations of its image.
        sample: the :class:`p2m.layout.Sample`.
        camera_json: the sample's camera as a JSON fragment (serialised once per camera), or "null".
        cam: ``[fx, fy, cx, cy]`` float32 of the camera (made once per camera), or None.
    """

    split: str
    key: str
    source: str
    person: int
    sample: Any
    camera_json: str
    cam: np.ndarray | None = None


@dataclass
class Encoded:
    """The tar bytes of one sample and the facts the index aggregates.

    Attributes:
        split: its split.
        key: its key.
        data: header + payload of every member, ready to append to a tar.
        source: dataset name.
        fields: the npz array names (and ``jpg``) present.
        body_model: model id or None; body_shapes: shapes of pose/shape/trans.
        skip: a reason when the sample could not be encoded (then ``data`` is empty).
        image_id: the image's id in its data.json (for messages).
    """

    split: str
    key: str
    data: bytes
    source: str
    fields: tuple[str, ...] = ()
    body_model: str | None = None
    body_shapes: dict[str, list[int]] | None = None
    skip: str | None = None
    image_id: Any = None


def camera_json(camera: Any) -> str:
    """The JSON text of a :class:`p2m.camera.Camera` (``to_dict``), or ``"null"``."""
    if camera is None:
        return "null"
    return json.dumps(camera.to_dict(), separators=(",", ":"))


def camera_array(camera: Any) -> np.ndarray | None:
    """``[fx, fy, cx, cy]`` float32 of a camera, or None."""
    if camera is None:
        return None
    return np.concatenate([camera.f, camera.c]).astype(np.float32)


def _float_array(value: Any, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
    """``value`` as a finite float32 array (of ``shape`` when given), or None."""
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float32)
        if shape is not None:
            arr = arr.reshape(shape)
    except (TypeError, ValueError):
        return None
    # one reduction instead of isfinite + all: inf and nan survive a sum
    return arr if arr.size and math.isfinite(arr.sum(dtype=np.float64)) else None


_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def body_model_id(params: Mapping[str, Any]) -> str:
    """``model`` or ``model/rig`` of a body-parameter record (``unknown`` when the record names none)."""
    model = str(params.get("model") or "unknown")
    rig = params.get("rig")
    return f"{model}/{rig}" if rig else model


def encode_job(job: Job, opts: EncodeOptions) -> Encoded:
    """Encode one person. Never raises for bad data: returns an :class:`Encoded` with ``skip`` set instead."""
    s = job.sample
    img, ann = s.image, s.annotation
    if ann.get("joints_2d_h36m") is None:
        return Encoded(job.split, job.key, b"", job.source, skip="no_joints_2d")
    j2d = _float_array(ann["joints_2d_h36m"], (17, 3))
    if j2d is None:
        return Encoded(job.split, job.key, b"", job.source, skip="bad_joints_2d")
    arrays: dict[str, np.ndarray] = {"j2d": j2d}
    if s.joints_3d_cam is not None:
        j3d = _float_array(s.joints_3d_cam, (17, 3))
        if j3d is None:
            return Encoded(job.split, job.key, b"", job.source, skip="bad_joints_3d")
        arrays["j3d"] = j3d
    bbox = _float_array(ann.get("bbox"), (4,))
    if bbox is None:
        return Encoded(job.split, job.key, b"", job.source, skip="bad_bbox")
    arrays["bbox"] = bbox
    if job.cam is not None:
        arrays["cam"] = job.cam
    model = rig = ident = None
    body_shapes = None
    params = s.body_param
    if params:
        body = {}
        for name in ("pose", "shape", "trans"):
            arr = _float_array(params.get(name))
            if arr is not None:
                body[name] = arr
        if body:
            model, rig, ident = params.get("model"), params.get("rig"), body_model_id(params)
            arrays.update(body)
            arrays["model"] = np.array(ident)
            body_shapes = {k: list(v.shape) for k, v in body.items()}
    meta: dict[str, Any] = {
        "key": job.key,
        "source": job.source,
        "image_id": img.get("id"),
        "ann_id": ann.get("id"),
        "subject": s.subject,
        "action": img.get("action_idx"),
        "subaction": img.get("subaction_idx"),
        "cam": img.get("cam_idx"),
        "frame": img.get("frame_idx"),
        "person": job.person,
        "file_name": img.get("file_name"),
        "width": img.get("width"),
        "height": img.get("height"),
        "bbox": bbox.tolist(),
        "body_model": model,
        "body_rig": rig,
    }
    for extra in ("source_url", "license"):
        if extra in img:
            meta[extra] = img[extra]
    members: list[bytes] = []
    fields = tuple(arrays)
    if opts.with_images:
        try:
            jpg, crop = _image_bytes(Path(s.image_path), bbox, opts)
        except FileNotFoundError:
            return Encoded(job.split, job.key, b"", job.source, skip="image_missing")
        except (OSError, ValueError) as exc:
            logger.debug("%s: cannot read image %s: %s", job.key, s.image_path, exc)
            return Encoded(job.split, job.key, b"", job.source, skip="image_unreadable")
        if crop is not None:
            meta["crop"] = crop
        members.append(tar_member(f"{job.key}.jpg", jpg))
        fields += ("jpg",)
    # The camera fragment is serialised once per camera, not once per person.
    text = _JSON.encode(meta)
    text = text[:-1] + ',"camera":' + job.camera_json + "}"
    members.insert(0, tar_member(f"{job.key}.json", text.encode("utf-8")))
    members.insert(1, tar_member(f"{job.key}.npz", encode_npz(arrays)))
    return Encoded(job.split, job.key, b"".join(members), job.source, fields, ident, body_shapes)


def _image_bytes(path: Path, bbox: np.ndarray, opts: EncodeOptions) -> tuple[bytes, list[float] | None]:
    """The JPEG bytes to store and, for a crop, ``[x0, y0, side]`` in frame pixels."""
    from PIL import Image

    if not opts.crop:
        raw = path.read_bytes()
        with Image.open(io.BytesIO(raw)) as im:
            fmt = im.format
            if fmt == "JPEG" and (opts.max_side is None or max(im.size) <= opts.max_side):
                return raw, None
            im = im.convert("RGB")
            if opts.max_side is not None and max(im.size) > opts.max_side:
                scale = opts.max_side / max(im.size)
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
            return _jpeg(im, opts.jpeg_quality), None
    x, y, w, h = (float(v) for v in bbox)
    side = max(w, h) * (1.0 + 2.0 * opts.crop_margin)
    if not side > 0:
        raise ValueError(f"bbox {bbox.tolist()} has no area")
    x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
    with Image.open(path) as im:
        im = im.convert("RGB")
        # EXTENT maps the (possibly out-of-frame, black-padded) square onto the output in one resample.
        crop = im.transform(
            (opts.crop_size, opts.crop_size), Image.EXTENT, (x0, y0, x0 + side, y0 + side), Image.BILINEAR
        )
    return _jpeg(crop, opts.jpeg_quality), [x0, y0, side]


def _jpeg(im: Any, quality: int) -> bytes:
    bio = io.BytesIO()
    im.save(bio, format="JPEG", quality=int(quality))
    return bio.getvalue()
