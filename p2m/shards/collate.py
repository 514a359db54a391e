"""Collate a batch of raw shard samples into torch tensors without decoding each sample's npz in Python.

Samples of one source have byte-identical npz layouts (same entries, dtypes, shapes; only the data and the
CRC fields differ), so a batch is stacked into a ``(B, L)`` byte matrix, checked against the layout of its
first row (every byte that is not data or CRC must match), and each entry is cut out as a column block and
viewed as its dtype: one copy per field for the whole batch. Rows with another layout (another body model,
no ``j3d``...) form their own group; a row that matches no layout is decoded on its own.

Body parameters may have different lengths per body model. A batch only stacks the ones of one model (chosen
by the reader from index.json or by the user); rows of other models get ``has_body = False`` and zeros.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from p2m.errors import ShardError
from p2m.shards.codec import Sample, decode_npz, npy_spec
from p2m.shards.index import FIXED_SHAPES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Entry:
    name: str
    start: int  # first data byte (after the npy header)
    nbytes: int
    dtype: np.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class _Layout:
    entries: tuple[_Entry, ...]
    fixed: tuple[tuple[int, int], ...]  # byte ranges that must equal the template's


_LAYOUTS: dict[bytes, _Layout | None] = {}


def _layout_of(blob: bytes) -> _Layout | None:
    """The layout of a stored npz as :func:`p2m.shards.codec.encode_npz` writes it (None for anything else)."""
    view = memoryview(blob)
    entries: list[_Entry] = []
    variable: list[tuple[int, int]] = []  # byte ranges that differ between samples: data and CRC fields
    pos, end = 0, len(blob)
    try:
        while pos + 30 <= end and view[pos : pos + 4] == b"PK\x03\x04":
            _, _, flags, method, _, _, _, csize, usize, nlen, elen = _LOCAL.unpack_from(view, pos)
            if method != 0 or flags & 0x08 or csize != usize:
                return None
            name = bytes(view[pos + 30 : pos + 30 + nlen]).decode("utf-8")
            start = pos + 30 + nlen + elen
            dtype, shape, count, hlen = npy_spec(view[start : start + csize])
            nbytes = count * dtype.itemsize
            if hlen + nbytes != csize or start + csize > end:
                return None
            entries.append(_Entry(name[:-4] if name.endswith(".npy") else name, start + hlen, nbytes, dtype, shape))
            variable += [(pos + 14, pos + 18), (start + hlen, start + csize)]
            pos = start + csize
        while pos + 46 <= end and view[pos : pos + 4] == b"PK\x01\x02":
            nlen, elen, clen = _CD_LENGTHS.unpack_from(view, pos + 28)
            variable.append((pos + 16, pos + 20))
            pos += 46 + nlen + elen + clen
    except (ValueError, UnicodeDecodeError):
        return None
    if not entries:
        return None
    variable.sort()
    fixed, cur = [], 0
    for a, b in variable:
        if a > cur:
            fixed.append((cur, a))
        cur = max(cur, b)
    if cur < end:
        fixed.append((cur, end))
    return _Layout(tuple(entries), tuple(fixed))


_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CD_LENGTHS = struct.Struct("<HHH")


def _signature(blob: bytes, probe: int = 48) -> bytes:
    """A cheap key for the layout cache: length + the first local header and name (CRC bytes excluded)."""
    return len(blob).to_bytes(8, "little") + blob[:14] + blob[18:probe]


def decode_batch_npz(blobs: Sequence[bytes]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Stack the arrays of ``B`` npz blobs.

    Returns:
        ``(arrays, present)``: ``arrays[name]`` is ``(B, *shape)`` for every entry name whose dtype and shape
        agree across all rows that have it (zeros where absent; unicode entries become object arrays of str);
        ``present[name]`` is a ``(B,)`` bool mask. Entries whose shape differs between rows are returned as
        object arrays of per-row arrays (None where absent) so that the caller can pick the rows it wants.
    """
    n = len(blobs)
    groups: dict[bytes, list[int]] = {}
    for i, blob in enumerate(blobs):
        groups.setdefault(_signature(blob), []).append(i)
    # name -> list of (row indices, values (k, *shape))
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for sig, rows in groups.items():
        layout = _LAYOUTS.get(sig)
        if layout is None and sig not in _LAYOUTS:
            layout = _LAYOUTS[sig] = _layout_of(blobs[rows[0]])
            if len(_LAYOUTS) > 4096:  # a pathological mix of layouts: keep the cache bounded
                _LAYOUTS.clear()
        if layout is None:
            for i in rows:
                _add_single(parts, i, blobs[i])
            continue
        idx = np.asarray(rows)
        mat = np.frombuffer(b"".join([blobs[i] for i in rows]), np.uint8).reshape(len(rows), -1)
        ok = np.ones(len(rows), bool)
        if len(rows) > 1:
            for a, b in layout.fixed:
                ok &= (mat[:, a:b] == mat[0, a:b]).all(axis=1)
        if not ok.all():
            for i in idx[~ok]:
                _add_single(parts, int(i), blobs[int(i)])
            mat, idx = mat[ok], idx[ok]
        for e in layout.entries:
            block = np.ascontiguousarray(mat[:, e.start : e.start + e.nbytes])
            values = block.view(e.dtype).reshape((len(idx), *e.shape))
            parts.setdefault(e.name, []).append((idx, values))
    arrays: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    for name, chunks in parts.items():
        mask = np.zeros(n, bool)
        specs = {(v.dtype.str, v.shape[1:]) for _, v in chunks}
        for rows, _ in chunks:
            mask[rows] = True
        present[name] = mask
        if len(specs) == 1 and next(iter(specs))[0][1] != "U":
            dtype_str, shape = next(iter(specs))
            out = np.zeros((n, *shape), dtype=np.dtype(dtype_str))
            for rows, values in chunks:
                out[rows] = values
        else:  # strings, or shapes that differ between rows
            out = np.empty(n, dtype=object)
            for rows, values in chunks:
                for r, v in zip(rows.tolist(), values, strict=True):
                    out[r] = str(v) if v.dtype.kind == "U" else v
        arrays[name] = out
    return arrays, present


def _add_single(parts: dict[str, list[tuple[np.ndarray, np.ndarray]]], row: int, blob: bytes) -> None:
    for name, arr in decode_npz(blob).items():
        parts.setdefault(name, []).append((np.asarray([row]), np.asarray(arr)[None]))


def select_body(
    arrays: Mapping[str, np.ndarray],
    present: Mapping[str, np.ndarray],
    model: str,
    shapes: Mapping[str, Sequence[int]],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The ``pose``/``shape``/``trans`` of the rows whose body model is ``model``, zero elsewhere.

    Args:
        arrays, present: from :func:`decode_batch_npz`.
        model: body model id (``name`` or ``name/rig``) to keep.
        shapes: field -> per-sample shape of that model (from index.json).

    Returns:
        ``({field: (B, *shape) float32}, has_body (B,) bool)``; ``has_body`` needs all three fields.
    """
    n = len(next(iter(present.values()))) if present else 0
    models = arrays.get("model")
    rows = np.zeros(n, bool)
    if models is not None:
        rows = np.array([m == model for m in models], dtype=bool) & present["model"]
    out: dict[str, np.ndarray] = {}
    for field, shape in shapes.items():
        dst = np.zeros((n, *shape), np.float32)
        src = arrays.get(field)
        if src is not None and rows.any():
            if src.dtype == object:
                for r in np.flatnonzero(rows):
                    v = src[r]
                    if v is not None and tuple(v.shape) == tuple(shape):
                        dst[r] = v
                    else:
                        rows[r] = False
            elif tuple(src.shape[1:]) == tuple(shape):
                dst[rows] = src[rows]
            else:
                rows[:] = False
        elif src is None:
            rows[:] = False
        out[field] = dst
    for field in shapes:
        rows &= present.get(field, np.zeros(n, bool))
    for field in shapes:
        out[field][~rows] = 0
    return out, rows


@dataclass(frozen=True)
class CollateSpec:
    """What a batch holds.

    Attributes:
        body_model: keep pose/shape/trans of this model id (None: no body fields).
        body_shapes: per-sample shape of each body field of that model.
        with_meta: add ``meta`` (list of decoded per-sample json dicts).
        with_images: add ``image`` (uint8 (B, H, W, 3) when sizes agree, else a list of (H, W, 3) tensors).
    """

    body_model: str | None = None
    body_shapes: Mapping[str, Sequence[int]] | None = None
    with_meta: bool = False
    with_images: bool = False


def collate(batch: Sequence[Sample], spec: CollateSpec) -> dict[str, Any]:
    """Batch raw samples into tensors.

    Returns:
        ``key`` list[str]; ``j2d`` (B, 17, 3) px + visibility; ``j3d`` (B, 17, 3) camera mm and ``has_j3d``
        (B,) bool; ``bbox`` (B, 4) [x, y, w, h] px; ``cam`` (B, 4) [fx, fy, cx, cy] px and ``has_cam``; with a
        body model: ``pose``, ``shape``, ``trans`` (B, ...) float32 and ``has_body`` (B,) bool (zeros where
        False); optionally ``meta`` and ``image``. All float tensors are float32.

    Raises:
        ShardError: a sample without ``.npz`` or ``j2d``, or a fixed field with the wrong shape.
    """
    keys = [k for k, _ in batch]
    try:
        blobs = [f["npz"] for _, f in batch]
    except KeyError:
        bad = next(k for k, f in batch if "npz" not in f)
        raise ShardError(f"sample {bad}: no .npz member (fields {sorted(dict(batch)[bad])})") from None
    arrays, present = decode_batch_npz(blobs)
    floats: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for name, shape in FIXED_SHAPES.items():
        arr = arrays.get(name)
        if arr is None:
            arr, mask = np.zeros((len(batch), *shape), np.float32), np.zeros(len(batch), bool)
        elif arr.dtype == object or arr.shape[1:] != shape:
            rows = np.flatnonzero(present[name]).tolist()
            row = next((r for r in rows if arr.dtype != object or np.shape(arr[r]) != shape), rows[0])
            got = np.shape(arr[row]) if arr.dtype == object else arr.shape[1:]
            raise ShardError(f"sample {keys[row]}: {name} shape {tuple(got)}, expected {shape}")
        else:
            mask = present[name]
        floats[name] = arr
        if name in ("j2d", "bbox"):  # required by the writer: a sample without them is corrupt
            if not mask.all():
                raise ShardError(f"sample {keys[int(np.flatnonzero(~mask)[0])]}: no {name} array")
        else:
            masks[f"has_{name}"] = mask
    if spec.body_model is not None and spec.body_shapes:
        body, has_body = select_body(arrays, present, spec.body_model, spec.body_shapes)
        floats.update(body)
        masks["has_body"] = has_body
    out: dict[str, Any] = {"key": keys, **_packed(floats, torch.float32), **_packed(masks, torch.bool)}
    if spec.with_meta:
        out["meta"] = [json.loads(f["json"]) if "json" in f else None for _, f in batch]
    if spec.with_images:
        out["image"] = _decode_images(batch)
    return out


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
    import io

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
