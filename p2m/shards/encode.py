"""Turn one person of the dataset layout into the members of a shard sample: key, .npy[, .json][, .jpg].

Sample format (DESIGN.md Contract 2, shard schema version 2; docs/formats.md):

- key: ``{source}_s{subject:03d}_a{action:03d}_sa{subaction:03d}_c{cam:04d}_f{frame:06d}_p{person:02d}``;
  the source name is sanitised (every character outside ``[A-Za-z0-9_-]`` becomes ``-``), so a key never
  holds a dot (WebDataset cuts keys at the first dot). ``person`` is the annotation's position among the
  annotations of its image, in file order.
- ``.npy``: everything the trainer reads, as one 0-d structured array (``np.load(...)["j2d"]``), float32 fields
  in this order, present ones only: ``j2d`` (17, 3) px + visibility; ``j3d`` (17, 3) camera-frame mm;
  ``bbox`` (4,) [x, y, w, h] px; ``cam`` (4,) [fx, fy, cx, cy] px and ``R`` (3, 3) world -> camera rotation
  (when the camera is known); ``pose``, ``shape``, ``trans`` as the dataset stores them (their shapes depend on
  the body model and rig) and ``model`` (bytes ``S<n>``, UTF-8 body model id ``name`` or ``name/rig``) when body
  parameters are known. Header padded to 16 bytes: a pose-only anny sample is one 2 KB tar member.
- ``.json`` (``with_meta``): key, source, image/annotation ids, subject, action, subaction, cam, frame, person,
  file name, image width/height, bbox (the float32 values, 9 significant digits), the camera dict (R, t mm, f, c[,
  k, p]), body model/rig, crop box when a crop is stored, plus ``source_url``/``license`` of crawled images.
- ``.jpg`` (``with_images``): the person crop (square, ``crop_margin`` around the bbox, ``crop_size`` px) or the
  whole frame (its original bytes when it is a JPEG and no ``max_side`` applies). Joints stay in frame pixels;
  the json's ``crop`` gives ``[x0, y0, side]`` so that ``(u - x0) * crop_size / side`` maps into the crop.

Encoding is per person and pure Python on the hot path (:class:`SampleEncoder`): numbers go to float32 through
``struct`` (numpy decides whenever a value is not a plain list or float64 array), the record header and tar header
come from cached layouts, and what a frame's cameras share (body parameters, camera arrays) is converted once.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import re
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

import numpy as np

from p2m.shards.codec import Field, record_header, tar_members

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@functools.lru_cache(maxsize=1024)
def sanitize_key_part(text: str) -> str:
    """Replace every run of characters outside ``[A-Za-z0-9_-]`` (dots included) by ``-``.

    ``"S1_Directions_1.54138969_000001"`` becomes ``"S1_Directions_1-54138969_000001"``.
    """
    out = _UNSAFE.sub("-", str(text)).strip("-")
    return out or "x"


def sample_key(
    source: str, subject: int, action: int, subaction: int, cam: int, frame: int, person: int
) -> str:
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
        with_meta: store a ``.json`` member (ids, file name, camera, provenance) per sample.
    """

    with_images: bool = False
    crop: bool = False
    crop_size: int = 256
    crop_margin: float = 0.2
    jpeg_quality: int = 90
    max_side: int | None = None
    with_meta: bool = False

    def to_config(self) -> dict[str, Any]:
        """The options that decide the bytes of a sample (recorded in index.json)."""
        cfg: dict[str, Any] = {
            "with_images": self.with_images,
            "crop": self.crop,
            "with_meta": self.with_meta,
        }
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
        cam: ``[fx, fy, cx, cy]`` (4,) float32 of the camera (made once per camera), or None.
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
        fields: the record field names present (and ``jpg``, ``json``).
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
    """``value`` as a finite float32 array (of ``shape`` when given), or None (numpy's rules: the reference)."""
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


_PACKERS: dict[int, struct.Struct] = {}
_LITTLE = sys.byteorder == "little"
_BBOX_VALUES = struct.Struct("<4f").unpack


def _pack_f32(flat: list[Any]) -> bytes | None:
    """Little-endian float32 bytes of a non-empty flat list of finite numbers, else None."""
    n = len(flat)
    packer = _PACKERS.get(n)
    if packer is None:
        if len(_PACKERS) > 256:
            _PACKERS.clear()
        packer = _PACKERS[n] = struct.Struct(f"<{n}f")
    try:
        # struct rounds like a C cast (as numpy does) and refuses values beyond float32; floats of float32 range
        # cannot overflow a float64 sum, so a non-finite sum means a nan or inf in the list.
        data = packer.pack(*flat)
        finite = math.isfinite(sum(flat))
    except (TypeError, ValueError, OverflowError, struct.error):
        return None
    return data if n and finite else None


def float32_bytes(value: Any, shape: tuple[int, ...] | None = None) -> tuple[bytes, tuple[int, ...]] | None:
    """``value`` as finite float32: ``(C-order bytes, shape)``, or None when it is missing, malformed or not finite.

    Decides exactly as ``np.asarray(value, np.float32).reshape(shape)`` + a finiteness check would, in a few
    microseconds for what datasets hold (flat lists, lists of 3-number rows, float64 arrays); anything else
    goes through numpy.

    Args:
        value: a list (flat, or rows of 3 numbers for a ``(n, 3)`` shape), an array, or None.
        shape: the required shape; None keeps the value's own shape.
    """
    if value is None:
        return None
    kind = type(value)
    if kind is list and (shape is None or (len(shape) == 1 and len(value) == shape[0])):
        data = _pack_f32(value)
        if data is not None:
            return data, (len(value),)
    elif kind is list and len(shape) == 2 and shape[1] == 3 and len(value) == shape[0]:
        try:
            flat = [v for x, y, z in value for v in (x, y, z)]
        except (TypeError, ValueError):
            flat = []
        data = _pack_f32(flat)
        if data is not None:
            return data, shape
    elif kind is np.ndarray and value.dtype == np.float64 and (shape is None or value.shape == shape):
        native = value.astype(np.float32).tobytes()
        if not (value.size and math.isfinite(sum(memoryview(native).cast("f")))):
            return None
        return (native if _LITTLE else value.astype("<f4").tobytes()), value.shape
    arr = _float_array(value, shape)
    return None if arr is None else (arr.tobytes(), arr.shape)


_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False)
#: The .json member up to the camera; the key needs no escaping (it is [A-Za-z0-9_-]); bbox numbers have the 9
#: significant digits that give back the record's float32 values exactly.
_META = (
    '{"key":"%s","source":%s,"image_id":%s,"ann_id":%s,"subject":%s,"action":%s,"subaction":%s,"cam":%s,'
    '"frame":%s,"person":%s,"file_name":%s,"width":%s,"height":%s,"bbox":[%.9g,%.9g,%.9g,%.9g],'
    '"body_model":%s,"body_rig":%s'
)


def _json_value(value: Any) -> str:
    """JSON text of one value: ints and strings directly (the common cases), anything else via json."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is str:
        return encode_basestring_ascii(value)
    return "null" if value is None else _JSON.encode(value)


_J2D: Field = ("j2d", "<f4", (17, 3))
_J3D: Field = ("j3d", "<f4", (17, 3))
_BBOX: Field = ("bbox", "<f4", (4,))
_CAM: Field = ("cam", "<f4", (4,))
_ROT: Field = ("R", "<f4", (3, 3))


def body_model_id(params: Mapping[str, Any]) -> str:
    """``model`` or ``model/rig`` of a body-parameter record (``unknown`` when the record names none)."""
    model = str(params.get("model") or "unknown")
    rig = params.get("rig")
    return f"{model}/{rig}" if rig else model


@dataclass(frozen=True)
class _Body:
    """The record fields of one body-parameter record: pose/shape/trans (those that are valid) and the model id."""

    fields: tuple[Field, ...]
    datas: tuple[bytes, ...]
    model: Any
    rig: Any
    ident: str
    shapes: dict[str, list[int]]


class SampleEncoder:
    """Encodes persons into shard samples; one per task, so that what persons share is converted once.

    Cached: a body-parameter record's fields (the images of one frame, one per camera, share the record), each
    camera's rotation, and the field names of each layout.
    """

    def __init__(self, opts: EncodeOptions, cache_size: int = 65536) -> None:
        self.opts = opts
        self.cache_size = cache_size
        self._bodies: dict[int, tuple[Any, _Body | None]] = {}  # id(record) -> (record, body)
        self._rots: dict[int, tuple[Any, bytes]] = {}  # id(camera) -> (camera, R as float32 bytes)
        self._names: dict[tuple[Field, ...], tuple[str, ...]] = {}
        self._shapes: dict[tuple[Field, ...], dict[str, list[int]]] = {}  # one shapes dict per body layout

    def body(self, params: Mapping[str, Any]) -> _Body | None:
        """The record fields of a body-parameter record (None when none of pose/shape/trans is valid)."""
        hit = self._bodies.get(id(params))
        if hit is not None and hit[0] is params:
            return hit[1]
        fields, datas, shapes = [], [], {}
        for name in ("pose", "shape", "trans"):
            got = float32_bytes(params.get(name))
            if got is not None:
                fields.append((name, "<f4", got[1]))
                datas.append(got[0])
                shapes[name] = list(got[1])
        body = None
        if fields:
            ident = body_model_id(params)
            raw = ident.encode("utf-8")
            fields.append(("model", f"S{len(raw)}", ()))
            datas.append(raw)
            shapes = self._shapes.setdefault(tuple(fields), shapes)  # shared: writers group samples by it
            body = _Body(tuple(fields), tuple(datas), params.get("model"), params.get("rig"), ident, shapes)
        if len(self._bodies) >= self.cache_size:
            self._bodies.clear()
        self._bodies[id(params)] = (params, body)  # the record is kept, so its id is not reused meanwhile
        return body

    def rotation(self, camera: Any) -> bytes:
        """The camera's R (3, 3) as little-endian float32 bytes (cached per camera object)."""
        hit = self._rots.get(id(camera))
        if hit is None or hit[0] is not camera:
            if len(self._rots) >= self.cache_size:
                self._rots.clear()
            hit = self._rots[id(camera)] = (camera, np.asarray(camera.R, "<f4").reshape(3, 3).tobytes())
        return hit[1]

    def encode(self, job: Job) -> Encoded:
        """Encode one person. Never raises for bad data: returns an :class:`Encoded` with ``skip`` set instead."""
        s = job.sample
        ann = s.annotation
        raw = ann.get("joints_2d_h36m")
        if raw is None:
            return Encoded(job.split, job.key, b"", job.source, skip="no_joints_2d")
        j2d = float32_bytes(raw, (17, 3))
        if j2d is None:
            return Encoded(job.split, job.key, b"", job.source, skip="bad_joints_2d")
        fields, datas = [_J2D], [j2d[0]]
        if s.joints_3d_cam is not None:
            j3d = float32_bytes(s.joints_3d_cam, (17, 3))
            if j3d is None:
                return Encoded(job.split, job.key, b"", job.source, skip="bad_joints_3d")
            fields.append(_J3D)
            datas.append(j3d[0])
        bbox = float32_bytes(ann.get("bbox"), (4,))
        if bbox is None:
            return Encoded(job.split, job.key, b"", job.source, skip="bad_bbox")
        fields.append(_BBOX)
        datas.append(bbox[0])
        if job.cam is not None and s.camera is not None:
            fields += (_CAM, _ROT)
            datas += (job.cam.astype("<f4", copy=False).tobytes(), self.rotation(s.camera))
        body = self.body(s.body_param) if s.body_param else None
        if body is not None:
            fields += body.fields
            datas += body.datas
        layout = tuple(fields)
        head, size = record_header(layout)
        record = b"".join((head, *datas))
        if len(record) != len(head) + size:
            raise ValueError(
                f"sample {job.key}: record data is {len(record) - len(head)} bytes, its header says {size}"
            )
        names = self._names.get(layout)
        if names is None:
            names = self._names[layout] = tuple(f[0] for f in layout)
        members = [(f"{job.key}.npy", record)]
        extras: dict[str, Any] = {}
        if self.opts.with_images:
            try:
                jpg, crop = _image_bytes(Path(s.image_path), np.frombuffer(bbox[0], "<f4"), self.opts)
            except FileNotFoundError:
                return Encoded(job.split, job.key, b"", job.source, skip="image_missing")
            except (OSError, ValueError) as exc:
                logger.debug("%s: cannot read image %s: %s", job.key, s.image_path, exc)
                return Encoded(job.split, job.key, b"", job.source, skip="image_unreadable")
            if crop is not None:
                extras["crop"] = crop
            members.append((f"{job.key}.jpg", jpg))
            names += ("jpg",)
        if self.opts.with_meta:
            members.insert(0, (f"{job.key}.json", self._meta(job, body, bbox[0], extras).encode("utf-8")))
            names += ("json",)
        return Encoded(
            job.split,
            job.key,
            tar_members(members),
            job.source,
            names,
            body.ident if body else None,
            body.shapes if body else None,
        )

    @staticmethod
    def _meta(job: Job, body: _Body | None, bbox: bytes, extras: dict[str, Any]) -> str:
        """The ``.json`` member's text (``with_meta``)."""
        s = job.sample
        img, ann = s.image, s.annotation
        text = _META % (
            job.key,
            _json_value(job.source),
            _json_value(img.get("id")),
            _json_value(ann.get("id")),
            _json_value(s.subject),
            _json_value(img.get("action_idx")),
            _json_value(img.get("subaction_idx")),
            _json_value(img.get("cam_idx")),
            _json_value(img.get("frame_idx")),
            _json_value(job.person),
            _json_value(img.get("file_name")),
            _json_value(img.get("width")),
            _json_value(img.get("height")),
            *_BBOX_VALUES(bbox),
            _json_value(body.model if body else None),
            _json_value(body.rig if body else None),
        )
        extras = {**{k: img[k] for k in ("source_url", "license") if k in img}, **extras}
        if extras:
            text += "," + _JSON.encode(extras)[1:-1]
        # The camera fragment is serialised once per camera, not once per person.
        return text + ',"camera":' + job.camera_json + "}"


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
                im = im.resize(
                    (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR
                )
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
