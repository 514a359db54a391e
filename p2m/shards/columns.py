"""The columnar path of `build_shards`: one subject's pose-only samples checked and encoded with numpy at once.

Parsing and per-sample Python work, not archiving, decide how fast pose-only shards are written. Here a
subject's data.json is decoded by msgspec into typed records (the fields the shards need, nothing else), the
2D joints, bboxes, 3D joints (world -> camera per camera, in one call per camera) and body parameters become
arrays over all people of the subject, and the tar members (ustar header, ``.npy`` record header, record) are
assembled as one uint8 matrix per record layout.

The per-sample path (:func:`p2m.shards.tasks.run_task` over :meth:`p2m.layout.Dataset.iter_samples` and
:class:`p2m.shards.encode.SampleEncoder`) stays the reference. :func:`encode_subject` returns None, and the
reference path runs instead, for anything this path does not take: images, ``.json`` members, a data.json that
is not in the plain shape (a field of another type, a 2D joint row that is not 3 numbers, NaN literals, invalid
UTF-8...), and every layout error (the reference path then raises its own error naming file, record and
field). Where this path runs, it writes the same bytes and counts the same skips as the reference path
(tests/shards/test_shard_columns.py compares both; test_shard_pinned.py pins the hashes).
"""

from __future__ import annotations

import contextlib
import gc
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import msgspec
import numpy as np

from p2m.errors import P2MError
from p2m.layout import check_param_sizes, decode_json, exclusion_reason
from p2m.shards.codec import BLOCK, Field, record_header, tar_header
from p2m.shards.encode import (
    _BBOX,
    _CAM,
    _J2D,
    _J3D,
    _ROT,
    Encoded,
    EncodeOptions,
    SampleEncoder,
    body_model_id,
    sanitize_key_part,
)

#: Switch for tests and measurements: False sends every subject down the per-sample path.
ENABLED = True
#: Samples per yielded batch.
BATCH = 4096
#: ``Encoded.skip`` of a sample that lies in an already written shard: only its key was made.
KEY_ONLY = "key_only"


class _Image(msgspec.Struct):
    id: int
    action_idx: int
    subaction_idx: int
    cam_idx: int
    frame_idx: int


class _Annotation(msgspec.Struct):
    image_id: int
    bbox: list[float] | None = None
    joints_2d_h36m: list[tuple[float, float, float]] | None = None
    iscrowd: Any = None
    review: Any = None
    fit_valid: Any = None


class _Data(msgspec.Struct):
    images: list[_Image]
    annotations: list[_Annotation]


class _BodyRecord(msgspec.Struct):
    model: Any = msgspec.UNSET
    rig: Any = None
    pose: list[float] | None = None
    shape: list[float] | None = None
    trans: list[float] | None = None


_DECODER = msgspec.json.Decoder(_Data)
_J3D_DECODER = msgspec.json.Decoder(dict[str, dict[str, dict[str, list[tuple[float, float, float]] | None]]])
_BODY_DECODER = msgspec.json.Decoder(dict[str, dict[str, dict[str, _BodyRecord | None]]])
_BODY_FIELDS = ("pose", "shape", "trans")


def encode_subject(task: Any, opts: EncodeOptions) -> list[EncodedBatch | Counter[str]] | None:
    """What :func:`p2m.shards.tasks.run_task` yields for this task, or None where the reference path must run.

    Args:
        task: a :class:`p2m.shards.tasks.SubjectTask` in mode ``"encode"`` or ``"keys"``.
        opts: pose-only options (no images, no ``.json`` member), else None is returned.
    """
    if not ENABLED or opts.with_images or opts.with_meta or task.mode not in ("encode", "keys"):
        return None
    ds = task.dataset
    files = ds.subject_files[0]
    if files.data is None:
        return None
    enabled = gc.isenabled()
    gc.disable()  # millions of acyclic objects, all freed by reference counting before this returns
    try:
        return _encode_subject(task, opts, ds, files)
    except (OSError, ValueError, RecursionError, KeyError, P2MError):
        return None  # the reference path reads it again and reports the problem its own way
    finally:
        if enabled:
            gc.enable()


def _encode_subject(task: Any, opts: EncodeOptions, ds: Any, files: Any) -> list[EncodedBatch | Counter[str]]:
    with files.data.open("rb") as fh:
        data = decode_json(fh.read(), _DECODER)
    content = ds.load_subject(files, data=False, nested=False)
    return _Subject(task, opts, files, content, data).items()


class _Subject:
    """One subject's annotations as columns; :meth:`items` encodes them."""

    def __init__(self, task: Any, opts: EncodeOptions, files: Any, content: Any, data: _Data) -> None:
        self.task, self.opts, self.files, self.content = task, opts, files, content
        images, anns = data.images, data.annotations
        index = {
            img.id: i for i, img in enumerate(images)
        }  # a repeated id: the last image wins, as in layout
        ann_img = [
            index[a.image_id] for a in anns
        ]  # KeyError: an unknown image (the reference path says which)
        self.stats: Counter[str] = Counter()
        prefix_of = self._frames(images, ann_img)
        # people: position among their image's annotations, exclusions, keys
        persons: dict[int, int] = {}
        rows: list[int] = []
        keys: list[str] = []
        for n, a in enumerate(anns):
            i = ann_img[n]
            person = persons.get(i, 0)
            persons[i] = person + 1
            if a.iscrowd or a.review is not None or a.fit_valid is False:  # else exclusion_reason says None
                why = exclusion_reason({"iscrowd": a.iscrowd, "review": a.review, "fit_valid": a.fit_valid})
                if why:
                    self.stats[f"samples/skipped/{why}"] += 1
                    continue
            keys.append(f"{prefix_of[i]}{person:02d}")
            rows.append(n)
        if keys and max(map(len, keys)) + 4 > 100:
            raise ValueError("a member name over 100 bytes")  # the reference path raises its own error
        self.rows, self.keys = rows, keys
        self.image_ids = [images[ann_img[n]].id for n in rows]
        self.img_of = np.fromiter((ann_img[n] for n in rows), np.int64, len(rows))
        if task.mode == "encode":
            self._people([anns[n] for n in rows])

    def _frames(self, images: list[_Image], ann_img: list[int]) -> dict[int, str]:
        """Camera, 3D joints (camera frame, float32) and body parameters of each image that has annotations.

        Returns the key of each such image without the person number (``sample_key(...)`` up to ``_p``).
        """
        content, files = self.content, self.files
        cameras = content.cameras if files.camera is not None else None
        cam_index: dict[int, int] = {}
        self.cameras: list[Any] = []
        frames: dict[tuple[int, int, int], int] = {}
        used = list(dict.fromkeys(ann_img))  # each image once, in order of first reference
        cam_of: list[int] = []
        frame_of: list[int] = []
        prefix_of: dict[int, str] = {}
        head = f"{sanitize_key_part(files.name)}_s{int(files.subject):03d}"
        for i in used:
            img = images[i]
            c = img.cam_idx
            if cameras is not None:
                ci = cam_index.get(c)
                if ci is None:
                    cam = cameras.get(str(c))
                    if cam is None:
                        raise KeyError(c)  # the reference path names the image and the camera file
                    ci = cam_index[c] = len(self.cameras)
                    self.cameras.append(cam)
                cam_of.append(ci)
            a, sa, f = img.action_idx, img.subaction_idx, img.frame_idx
            fi = frames.get((a, sa, f))
            if fi is None:
                fi = frames[(a, sa, f)] = len(frames)
            frame_of.append(fi)
            prefix_of[i] = f"{head}_a{a:03d}_sa{sa:03d}_c{c:04d}_f{f:06d}_p"
        n_img = len(images)
        used_arr = np.array(used, np.int64)
        self.frame_of_img = np.zeros(n_img, np.int64)
        self.frame_of_img[used_arr] = frame_of
        self.cam_of_img = np.full(n_img, -1, np.int64)
        if cameras is not None:
            self.cam_of_img[used_arr] = cam_of
        # per frame: world joints and body parameters, with the layout reader's checks
        encoder = SampleEncoder(self.opts)
        stack, has_world = self._worlds(list(frames))
        self._bodies(list(frames), encoder)
        # 3D joints in each camera's frame: one matmul per camera over a stack of (17, 3) worlds, which numpy
        # computes matrix by matrix exactly as Camera.world_to_camera does for one
        self.has_j3d = np.zeros(n_img, bool)
        self.j3d = np.zeros((n_img, 17, 3), "<f4")
        self.j3d_ok = np.ones(n_img, bool)
        if cameras is not None and has_world.any():
            with_j3d = used_arr[has_world[self.frame_of_img[used_arr]]]
            for ci, cam in enumerate(self.cameras):
                idx = with_j3d[self.cam_of_img[with_j3d] == ci]
                with np.errstate(over="ignore", invalid="ignore"):
                    f32 = (stack[self.frame_of_img[idx]] @ cam.R.T + cam.t).astype("<f4")
                self.j3d[idx] = f32
                self.has_j3d[idx] = True
                self.j3d_ok[idx] = np.isfinite(f32).all(axis=(1, 2))
        self.cam_table = np.zeros((len(self.cameras), 52), np.uint8)
        for ci, cam in enumerate(self.cameras):
            row = np.concatenate([cam.f, cam.c]).astype("<f4").tobytes() + encoder.rotation(cam)
            self.cam_table[ci] = np.frombuffer(row, np.uint8)
        return prefix_of

    def _nested(self, path: Any, decoder: Any) -> dict[str, Any]:
        if path is None:
            return {}
        with path.open("rb") as fh:
            return decode_json(fh.read(), decoder)

    def _worlds(self, frames: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """World joints (F, 17, 3) float64 of each frame, and whether the frame has them (F + 1, last False)."""
        nested = self._nested(self.files.joint_3d, _J3D_DECODER)
        raws = [nested.get(str(a), {}).get(str(sa), {}).get(str(f)) for a, sa, f in frames] if nested else []
        have = [fi for fi, raw in enumerate(raws) if raw is not None]
        if any(len(raws[fi]) != 17 for fi in have):
            raise ValueError("3D joints that are not 17 x 3")  # the reference path names the frame
        stack = np.zeros((len(frames), 17, 3))
        has_world = np.zeros(len(frames) + 1, bool)
        if have:
            flat = chain.from_iterable(chain.from_iterable(raws[fi] for fi in have))
            stack[have] = np.fromiter(flat, np.float64, 51 * len(have)).reshape(-1, 17, 3)
            has_world[have] = True
        return stack, has_world

    def _bodies(self, frames: list[tuple[int, int, int]], encoder: SampleEncoder) -> None:
        """The body fields of each frame, as :meth:`SampleEncoder.body` makes them, in tables per layout.

        Checked as the layout reader checks them (:func:`p2m.layout.check_param_sizes`; a legacy ``smpl_param``
        record without a model is SMPL). Frames with the same model id and lengths are converted to float32 in
        one go; a field that is empty or not finite is left out, as the per-sample path leaves it out.
        Sets ``body_of_frame`` (F + 1, -1: no body) and ``body_layouts``: ``(fields, model id, shapes, table)``,
        the table holding each frame's body bytes at its frame index.
        """
        files = self.files
        path = files.body_param or files.smpl_param
        nested = self._nested(path, _BODY_DECODER)
        recs = [nested.get(str(a), {}).get(str(sa), {}).get(str(f)) for a, sa, f in frames] if nested else []
        legacy = files.body_param is None and files.smpl_param is not None
        checked: dict[Any, str] = {}  # (model, rig, lengths) -> model id, once checked
        groups: dict[tuple[str, tuple[int | None, ...]], list[int]] = {}
        for fi, rec in enumerate(recs):
            if rec is None:
                continue
            model = rec.model if rec.model is not msgspec.UNSET else ("smpl" if legacy else None)
            lengths = (
                None if rec.pose is None else len(rec.pose),
                None if rec.shape is None else len(rec.shape),
                None if rec.trans is None else len(rec.trans),
            )
            try:
                ident = checked.get((model, rec.rig, lengths))
            except TypeError:  # a model or rig that is a list or an object
                ident = None
            if ident is None:
                a, sa, f = frames[fi]
                check_param_sizes(
                    {
                        "model": model,
                        "rig": rec.rig,
                        "pose": rec.pose,
                        "shape": rec.shape,
                        "trans": rec.trans,
                    },
                    f"{path}: frame {a}/{sa}/{f}",
                )
                ident = body_model_id({"model": model, "rig": rec.rig})
                with contextlib.suppress(TypeError):
                    checked[(model, rec.rig, lengths)] = ident
            groups.setdefault((ident, lengths), []).append(fi)
        self.body_of_frame = np.full(len(frames) + 1, -1, np.int64)
        self.body_layouts: list[tuple[tuple[Field, ...], str, dict[str, list[int]], np.ndarray]] = []
        layout_index: dict[tuple[tuple[Field, ...], str], int] = {}
        for (ident, lengths), fis in groups.items():
            arrays: list[np.ndarray | None] = []
            ok = np.zeros((len(fis), len(_BODY_FIELDS)), bool)
            for j, (name, length) in enumerate(zip(_BODY_FIELDS, lengths)):
                if not length:  # absent, null or empty: never a field
                    arrays.append(None)
                    continue
                flat = chain.from_iterable(getattr(recs[fi], name) for fi in fis)
                with np.errstate(over="ignore", invalid="ignore"):
                    f32 = np.fromiter(flat, np.float64, length * len(fis)).reshape(-1, length).astype("<f4")
                arrays.append(f32)
                ok[:, j] = np.isfinite(f32).all(axis=1)
            raw = ident.encode("utf-8")
            fis_arr = np.array(fis, np.int64)
            bits = ok @ np.array([1, 2, 4])
            for b in np.unique(bits[bits > 0]).tolist():
                sub = np.nonzero(bits == b)[0]
                fields: list[Field] = []
                shapes: dict[str, list[int]] = {}
                parts = []
                for j, name in enumerate(_BODY_FIELDS):
                    if b >> j & 1:
                        f32 = arrays[j]
                        assert f32 is not None
                        fields.append((name, "<f4", (f32.shape[1],)))
                        shapes[name] = [f32.shape[1]]
                        parts.append(f32[sub].view(np.uint8))
                fields.append(("model", f"S{len(raw)}", ()))
                parts.append(np.broadcast_to(np.frombuffer(raw, np.uint8), (len(sub), len(raw))))
                layout = tuple(fields)
                li = layout_index.get((layout, ident))
                if li is None:
                    li = layout_index[(layout, ident)] = len(self.body_layouts)
                    width = sum(p.shape[1] for p in parts)
                    shapes = encoder._shapes.setdefault(layout, shapes)  # one dict per layout, as the encoder
                    self.body_layouts.append(
                        (layout, ident, shapes, np.zeros((len(frames), width), np.uint8))
                    )
                self.body_layouts[li][3][fis_arr[sub]] = np.concatenate(parts, axis=1)
                self.body_of_frame[fis_arr[sub]] = li

    def _people(self, anns: list[_Annotation]) -> None:
        """2D joints and bboxes as float32 arrays, and each person's skip reason (as SampleEncoder.encode)."""
        count = len(anns)
        skip: list[str | None] = [None] * count
        self.j2d = np.zeros((count, 17, 3), "<f4")
        self.bbox = np.zeros((count, 4), "<f4")
        good = []
        for k, a in enumerate(anns):
            j = a.joints_2d_h36m
            if j is None:
                skip[k] = "no_joints_2d"
            elif len(j) != 17:
                skip[k] = "bad_joints_2d"
            else:
                good.append(k)
        if good:
            flat = chain.from_iterable(chain.from_iterable(anns[k].joints_2d_h36m for k in good))
            with np.errstate(over="ignore", invalid="ignore"):
                self.j2d[good] = (
                    np.fromiter(flat, np.float64, 51 * len(good)).reshape(-1, 17, 3).astype("<f4")
                )
            for k in np.asarray(good)[~np.isfinite(self.j2d[good]).all(axis=(1, 2))].tolist():
                skip[k] = "bad_joints_2d"
        bad_j3d = (self.has_j3d & ~self.j3d_ok)[self.img_of]
        for k in np.nonzero(bad_j3d)[0].tolist():
            skip[k] = skip[k] or "bad_joints_3d"
        good = []
        for k, a in enumerate(anns):
            if skip[k] is None:
                b = a.bbox
                if b is None or len(b) != 4:
                    skip[k] = "bad_bbox"
                else:
                    good.append(k)
        if good:
            flat = chain.from_iterable(anns[k].bbox for k in good)
            with np.errstate(over="ignore", invalid="ignore"):
                self.bbox[good] = np.fromiter(flat, np.float64, 4 * len(good)).reshape(-1, 4).astype("<f4")
            for k in np.asarray(good)[~np.isfinite(self.bbox[good]).all(axis=1)].tolist():
                skip[k] = "bad_bbox"
        self.skip = skip

    def items(self) -> list[EncodedBatch | Counter[str]]:
        task, source = self.task, self.files.name
        n = len(self.keys)
        if task.mode == "keys":
            batch = EncodedBatch(
                task.split, source, self.keys, self.image_ids, b"", [0] * n, [KEY_ONLY] * n, [], [-1] * n
            )
        else:
            batch = self._encode()
        out: list[EncodedBatch | Counter[str]] = [batch[a : a + BATCH] for a in range(0, n, BATCH)]
        out.append(self.stats)
        return out

    def _encode(self) -> EncodedBatch:
        """Every person's members, in file order: one uint8 matrix of tar members per record layout."""
        task, source, keys = self.task, self.files.name, self.keys
        n = len(keys)
        img = self.img_of
        frame = self.frame_of_img[img]
        code = self.has_j3d[img] * 1 + (self.cam_of_img[img] >= 0) * 2 + (self.body_of_frame[frame] + 1) * 4
        live = np.array([why is None for why in self.skip], bool)
        widths = np.zeros(n, np.int64)
        group_of = np.full(n, -1, np.int64)
        groups: list[tuple[tuple[str, ...], str | None, dict[str, list[int]] | None]] = []
        blobs: list[tuple[np.ndarray, np.ndarray, int]] = []
        for c in np.unique(code[live]).tolist():
            sel = np.nonzero(live & (code == c))[0]
            has_j3d, has_cam, bl = bool(c & 1), bool(c & 2), c // 4 - 1
            fields: list[Field] = [_J2D] + [_J3D] * has_j3d + [_BBOX] + [_CAM, _ROT] * has_cam
            parts = [self.j2d[sel].reshape(len(sel), 51).view(np.uint8)]
            if has_j3d:
                parts.append(self.j3d[img[sel]].reshape(len(sel), 51).view(np.uint8))
            parts.append(self.bbox[sel].view(np.uint8))
            if has_cam:
                parts.append(self.cam_table[self.cam_of_img[img[sel]]])
            ident, shapes = None, None
            if bl >= 0:
                body_fields, ident, shapes, table = self.body_layouts[bl]
                fields += body_fields
                parts.append(table[frame[sel]])
            head, size = record_header(tuple(fields))
            data = np.concatenate(parts, axis=1)
            if data.shape[1] != size:
                raise ValueError(f"internal: record of {data.shape[1]} bytes, its header says {size}")
            blob, width = _members(data, head, [keys[k] for k in sel.tolist()])
            widths[sel] = width
            blobs.append((sel, blob, width))
            group_of[sel] = len(groups)
            groups.append((tuple(f[0] for f in fields), ident, shapes))
        ends = np.cumsum(widths)
        if len(blobs) == 1:
            data_all = blobs[0][1]  # one layout: the members are already in file order
        else:
            pieces: list[Any] = [b""] * n
            for sel, blob, width in blobs:
                view = memoryview(blob)
                for j, k in enumerate(sel.tolist()):
                    pieces[k] = view[j * width : (j + 1) * width]
            data_all = b"".join(pieces)
        return EncodedBatch(
            task.split,
            source,
            keys,
            self.image_ids,
            data_all,
            ends.tolist(),
            self.skip,
            groups,
            group_of.tolist(),
        )


@dataclass
class EncodedBatch:
    """Consecutive samples of one subject as the columnar path encodes them: a list of Encoded, in columns.

    Iterating gives the :class:`p2m.shards.encode.Encoded` of each sample (what the per-sample path yields);
    the writer takes a batch whole (``_SplitWriter.add_batch``).

    Attributes:
        split, source: the split and dataset name of every sample.
        keys: sample keys, in file order; image_ids: their image ids (for messages).
        data: the tar members of the samples that are written, back to back, in key order (bytes, or a flat
            uint8 array: the writer needs only the buffer).
        ends: per sample, the end offset of its members in ``data`` (a skipped sample has none: the previous end).
        skips: per sample, a skip reason or None.
        groups: ``(field names, body model id, body shapes)`` of each group of samples the index counts together.
        group_of: per sample, its index in ``groups`` (-1: skipped).
    """

    split: str
    source: str
    keys: list[str]
    image_ids: list[Any]
    data: bytes | np.ndarray
    ends: list[int]
    skips: list[str | None]
    groups: list[tuple[tuple[str, ...], str | None, dict[str, list[int]] | None]]
    group_of: list[int]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, part: slice) -> EncodedBatch:
        """The samples ``part`` (a slice with step 1) as a batch of their own."""
        a, b, _ = part.indices(len(self.keys))
        start = self.ends[a - 1] if a else 0
        stop = self.ends[b - 1] if b > a else start
        data = self.data if (start, stop) == (0, len(self.data)) else self.data[start:stop]
        return EncodedBatch(
            self.split,
            self.source,
            self.keys[a:b],
            self.image_ids[a:b],
            data,
            [e - start for e in self.ends[a:b]],
            self.skips[a:b],
            self.groups,
            self.group_of[a:b],
        )

    def __iter__(self) -> Iterator[Encoded]:
        start = 0
        for k, key in enumerate(self.keys):
            end, why, g = self.ends[k], self.skips[k], self.group_of[k]
            if why is not None or g < 0:
                yield Encoded(self.split, key, b"", self.source, skip=why, image_id=self.image_ids[k])
            else:
                names, model, shapes = self.groups[g]
                yield Encoded(
                    self.split,
                    key,
                    bytes(self.data[start:end]),
                    self.source,
                    names,
                    model,
                    shapes,
                    image_id=self.image_ids[k],
                )
            start = end


def _members(records: np.ndarray, head: bytes, keys: list[str]) -> tuple[np.ndarray, int]:
    """``key.npy`` tar members (header, record header, record, padding) of equal-layout records, concatenated.

    Returns the bytes (a flat uint8 array: no copy) and the width of one member. The ustar header is :func:`p2m.shards.codec.tar_header`'s
    with the name and checksum filled in per row.
    """
    n, size = records.shape
    data_len = len(head) + size
    width = BLOCK + -(-data_len // BLOCK) * BLOCK
    template = np.frombuffer(tar_header("", data_len), np.uint8)
    base_sum = int(bytes(template[148:154]), 8)
    names = np.array([f"{k}.npy".encode() for k in keys], "S100").view(np.uint8).reshape(n, 100)
    check = base_sum + names.sum(axis=1, dtype=np.int64)
    buf = np.zeros((n, width), np.uint8)
    buf[:, :BLOCK] = template
    buf[:, :100] = names
    buf[:, 148:154] = (check[:, None] >> np.arange(15, -1, -3)) % 8 + 48
    buf[:, BLOCK : BLOCK + len(head)] = np.frombuffer(head, np.uint8)
    buf[:, BLOCK + len(head) : BLOCK + data_len] = records
    return buf.reshape(-1), width
