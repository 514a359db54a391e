"""Collate raw shard samples into one batch of torch tensors (the batch contract below) without a Python loop
over fields.

Each sample holds one ``.npy`` record (:mod:`p2m.shards.encode`). Samples of one kind (same fields, same body
model) have byte-identical ``.npy`` headers, so a batch is grouped by header, each group's data joined into one
buffer and viewed as a structured array: one copy per group, then one per field into the batch tensors.

Body parameters may have different lengths per body model. A batch only stacks the ones of one model (chosen by
the reader from index.json or by the user); rows of other models get ``has_body = False`` and zeros.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from p2m.errors import ShardError
from p2m.shards.codec import Sample, npy_spec
from p2m.shards.index import BODY_FIELDS, FIXED_SHAPES

#: Fields every record must hold (the writer refuses a sample without them).
REQUIRED = ("j2d", "bbox")
_EYE = np.eye(3, dtype=np.float32)


@dataclass(frozen=True)
class CollateSpec:
    """What a batch holds.

    Attributes:
        body_model: keep pose/shape/trans of this model id (None: no body fields).
        body_shapes: per-sample shape of each body field of that model.
        with_meta: add ``meta`` (list of decoded per-sample json dicts; None where a sample has none).
        with_images: add ``image`` (uint8 (B, H, W, 3) when sizes agree, else a list of (H, W, 3) tensors).
    """

    body_model: str | None = None
    body_shapes: Mapping[str, Sequence[int]] | None = None
    with_meta: bool = False
    with_images: bool = False


@dataclass(frozen=True)
class _Layout:
    """A record header's dtype, or why it cannot be collated."""

    dtype: np.dtype | None
    error: str | None = None


_LAYOUTS: dict[bytes, _Layout] = {}


def _layout(head: bytes) -> _Layout:
    """The (cached) checked layout of a record header."""
    hit = _LAYOUTS.get(head)
    if hit is not None:
        return hit
    try:
        dtype, shape, _, _ = npy_spec(head)
    except ValueError as exc:
        hit = _Layout(None, f".npy header does not parse: {exc}")
    else:
        hit = _Layout(dtype)
        if shape != () or dtype.names is None:
            hit = _Layout(None, f".npy is a {dtype} array of shape {shape}, not a 0-d record")
        else:
            for name in dtype.names:
                sub = dtype.fields[name][0]
                expected = FIXED_SHAPES.get(name)
                if expected is not None and (sub.shape != expected or sub.base.kind != "f"):
                    hit = _Layout(
                        None, f"{name} is {sub.base}{list(sub.shape)}, expected float32{list(expected)}"
                    )
                    break
            missing = [f for f in REQUIRED if f not in dtype.names]
            if hit.error is None and missing:
                hit = _Layout(None, f"the record has no {missing[0]}")
    if len(_LAYOUTS) > 4096:  # a pathological mix of layouts: keep the cache bounded
        _LAYOUTS.clear()
    _LAYOUTS[head] = hit
    return hit


def _header_length(blob: bytes) -> int:
    if len(blob) < 10 or blob[:6] != b"\x93NUMPY":
        return -1
    return 10 + blob[8] + 256 * blob[9] if blob[6] == 1 else 12 + int.from_bytes(blob[8:12], "little")


def collate(batch: Sequence[Sample], spec: CollateSpec) -> dict[str, Any]:
    """Batch raw samples ``(key, {field: bytes})`` into tensors.

    The batch contract (the trainer, evaluation and any other source of batches keep it):

    - ``key`` list[str];
    - ``j2d`` (B, 17, 3) px + visibility; ``bbox`` (B, 4) [x, y, w, h] px;
    - ``j3d`` (B, 17, 3) camera-frame mm and ``has_j3d`` (B,) bool;
    - ``cam`` (B, 4) [fx, fy, cx, cy] px and ``has_cam`` (B,) bool; ``R`` (B, 3, 3) world -> camera rotation
      (identity where the camera is unknown);
    - with a body model: ``pose``, ``shape``, ``trans`` (B, ...) and ``has_body`` (B,) bool;
    - optionally ``meta`` (list of dicts) and ``image`` (uint8).

    Float tensors are float32, zeros where a ``has_*`` mask is False.

    Raises:
        ShardError: naming the sample: no ``.npy`` record, a record that does not parse, lacks ``j2d``/``bbox``
            or holds a field of the wrong shape.
    """
    keys = [k for k, _ in batch]
    n = len(batch)
    groups: dict[bytes, list[int]] = {}
    for i, (key, fields) in enumerate(batch):
        blob = fields.get("npy")
        if blob is None:
            raise ShardError(
                f"sample {key}: no .npy record (members {sorted(fields)}); shards of schema 2 have one"
            )
        hlen = _header_length(blob)
        if hlen < 0 or hlen > len(blob):
            raise ShardError(f"sample {key}: the .npy member is not an .npy array")
        head = blob[:hlen]
        rows = groups.get(head)
        if rows is None:
            groups[head] = [i]
        else:
            rows.append(i)
    floats: dict[str, np.ndarray] = {
        name: np.zeros((n, *shape), np.float32) for name, shape in FIXED_SHAPES.items()
    }
    floats["R"][:] = _EYE
    masks = {"has_j3d": np.zeros(n, bool), "has_cam": np.zeros(n, bool)}
    body_model = spec.body_model.encode("utf-8") if spec.body_model is not None and spec.body_shapes else None
    if body_model is not None:
        assert spec.body_shapes is not None
        for name, shape in spec.body_shapes.items():
            floats[name] = np.zeros((n, *shape), np.float32)
        masks["has_body"] = np.zeros(n, bool)
    for head, rows in groups.items():
        layout = _layout(head)
        if layout.error is not None:
            raise ShardError(f"sample {keys[rows[0]]}: {layout.error}")
        dtype = layout.dtype
        assert dtype is not None
        hlen = len(head)
        data = b"".join([memoryview(batch[i][1]["npy"])[hlen:] for i in rows])
        if len(data) != len(rows) * dtype.itemsize:
            bad = next(i for i in rows if len(batch[i][1]["npy"]) - hlen != dtype.itemsize)
            raise ShardError(
                f"sample {keys[bad]}: .npy record data is {len(batch[bad][1]['npy']) - hlen} bytes, "
                f"its header says {dtype.itemsize}"
            )
        records = np.frombuffer(data, dtype)
        idx = np.asarray(rows)
        names = dtype.names
        for name in FIXED_SHAPES:
            if name in names:
                floats[name][idx] = records[name]
        if "j3d" in names:
            masks["has_j3d"][idx] = True
        if "cam" in names and "R" in names:
            masks["has_cam"][idx] = True
        if body_model is not None and _has_body(dtype, spec.body_shapes):
            mine = records["model"] == body_model
            sel = idx[mine]
            for name in spec.body_shapes:  # type: ignore[union-attr]
                floats[name][sel] = records[name][mine]
            masks["has_body"][sel] = True
    out: dict[str, Any] = {"key": keys, **_packed(floats, torch.float32), **_packed(masks, torch.bool)}
    if spec.with_meta:
        out["meta"] = [json.loads(f["json"]) if "json" in f else None for _, f in batch]
    if spec.with_images:
        out["image"] = _decode_images(batch)
    return out


def _has_body(dtype: np.dtype, shapes: Mapping[str, Sequence[int]] | None) -> bool:
    """Whether records of this dtype carry every body field with the selected model's shapes."""
    if not shapes or "model" not in dtype.names or dtype.fields["model"][0].kind != "S":
        return False
    for name in BODY_FIELDS:
        if name in shapes and (name not in dtype.names or dtype.fields[name][0].shape != tuple(shapes[name])):
            return False
    return True


def _packed(arrays: Mapping[str, np.ndarray], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Tensors that are views of one storage: a DataLoader worker then hands over one shared-memory block per
    batch instead of one per field."""
    sizes = [a.size for a in arrays.values()]
    storage = torch.empty(sum(sizes), dtype=dtype)
    flat = storage.numpy()
    out, pos = {}, 0
    for (name, arr), n in zip(arrays.items(), sizes, strict=True):
        flat[pos : pos + n] = arr.reshape(-1)
        out[name] = storage[pos : pos + n].view(arr.shape)
        pos += n
    return out


def _decode_images(batch: Sequence[Sample]) -> Any:
    from PIL import Image

    images = []
    for key, fields in batch:
        if "jpg" not in fields:
            raise ShardError(f"sample {key}: no .jpg member; write the shards with --with-images")
        with Image.open(io.BytesIO(fields["jpg"])) as im:
            images.append(torch.from_numpy(np.asarray(im.convert("RGB")).copy()))
    if len({tuple(t.shape) for t in images}) == 1:
        return torch.stack(images)
    return images
