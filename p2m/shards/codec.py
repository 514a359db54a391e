"""Byte formats of a shard, written and parsed without per-member Python overhead: tar, npz, npy.

The standard modules are correct but slow for kilobyte samples (``tarfile.addfile`` ~25 us per member,
``np.savez`` ~130 us and ``np.load`` of an npz ~500 us per sample). The writers here emit what a POSIX ustar
archive and ``np.savez`` (stored, uncompressed zip) would, except that ``.npy`` headers are padded to 16 bytes
instead of 64 (see :data:`NPY_ALIGN`), so ``tar``, ``tarfile``, ``webdataset``, ``zipfile`` and ``np.load`` read
them unchanged; the parsers handle exactly what the writers produce and fall back to ``np.load`` for anything
else (e.g. a compressed npz made by another tool).
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO

import numpy as np

logger = logging.getLogger(__name__)

Sample = tuple[str, dict[str, bytes]]  # (key, {field: bytes}): one sample as read from a tar

BLOCK = 512
#: Two zero blocks end a tar archive.
TAR_END = b"\0" * (2 * BLOCK)
DEFAULT_MTIME = 0  # fixed, so that the same members give the same bytes (and sha256) on every run

# ---------------------------------------------------------------------------------------------------- tar


def _octal(value: int, width: int) -> bytes:
    """``width`` bytes: zero-padded octal digits and a NUL, as ustar numeric fields are stored."""
    text = b"%0*o" % (width - 1, value)
    if len(text) > width - 1:
        raise ValueError(f"tar field value {value} does not fit {width - 1} octal digits")
    return text + b"\0"


def tar_header(name: str, size: int, mtime: int = DEFAULT_MTIME, mode: int = 0o444) -> bytes:
    """A 512-byte ustar header for a regular file (owner p2m, uid/gid 0).

    Args:
        name: member name, at most 100 UTF-8 bytes (p2m keys are far shorter).
        size: member size in bytes (< 8 GiB).
        mtime: modification time, seconds since the epoch (fixed for reproducible shards).
        mode: permission bits.

    Returns:
        The header block (bytes, length 512).
    """
    return b"".join(_header_parts(name, size, mtime, mode))


def _header_parts(name: str, size: int, mtime: int = DEFAULT_MTIME, mode: int = 0o444) -> tuple[bytes, ...]:
    """The pieces of :func:`tar_header`, for joining with more pieces without an extra copy."""
    raw = name.encode("utf-8")
    if len(raw) > 100:
        raise ValueError(f"tar member name {name!r} is {len(raw)} bytes; at most 100 are supported")
    if not 0 <= size < 8**11:
        raise ValueError(f"tar member size {size} does not fit 11 octal digits")
    template = _TEMPLATES.get((mtime, mode))
    if template is None:
        template = _TEMPLATES[(mtime, mode)] = _header_template(mtime, mode)
    ids, mtime_field, tail, base_sum = template
    size_field = b"%011o\0" % size
    check = base_sum + sum(raw) + sum(size_field)
    return raw, bytes(100 - len(raw)), ids, size_field, mtime_field, b"%06o\0 " % check, tail


_TEMPLATES: dict[tuple[int, int], tuple[bytes, bytes, bytes, int]] = {}


def _header_template(mtime: int, mode: int) -> tuple[bytes, bytes, bytes, int]:
    """The constant fields of a header (bytes 100-124, 136-148, 156-512) and their byte sum.

    The checksum is the byte sum of the header with its own field (148-156) read as spaces.
    """
    ids = _octal(mode, 8) + _octal(0, 8) + _octal(0, 8)  # mode, uid, gid
    mtime_field = _octal(mtime, 12)
    tail = bytearray(BLOCK - 156)
    tail[0:1] = b"0"  # typeflag: regular file
    tail[257 - 156 : 265 - 156] = b"ustar\x0000"
    tail[265 - 156 : 269 - 156] = b"p2m\0"  # uname
    tail[297 - 156 : 301 - 156] = b"p2m\0"  # gname
    return ids, mtime_field, bytes(tail), sum(ids) + sum(mtime_field) + 8 * 32 + sum(tail)


_PADS = [bytes(n) for n in range(BLOCK)]


def tar_member(name: str, data: bytes, mtime: int = DEFAULT_MTIME) -> bytes:
    """Header + data + zero padding to the next 512-byte boundary."""
    return b"".join((*_header_parts(name, len(data), mtime), data, _PADS[-len(data) % BLOCK]))


def tar_members(members: Sequence[tuple[str, bytes]], mtime: int = DEFAULT_MTIME) -> bytes:
    """:func:`tar_member` of each ``(name, data)``, concatenated (one copy of the data)."""
    parts: list[bytes] = []
    for name, data in members:
        parts += _header_parts(name, len(data), mtime)
        parts += (data, _PADS[-len(data) % BLOCK])
    return b"".join(parts)


class TarStreamError(ValueError):
    """A tar stream that ends inside a member or holds a header that is not ustar."""


def _parse_size(head: bytes | memoryview) -> int:
    field = bytes(head[124:136])
    if field[0] & 0x80:  # GNU base-256 for huge members
        return int.from_bytes(field[1:], "big")
    digits = field.strip(b"\0 ")
    return int(digits, 8) if digits else 0


def _check_header(head: bytes, where: str, offset: int) -> None:
    stored = head[148:156].strip(b"\0 ")
    try:
        expected = int(stored, 8)
    except ValueError:
        raise TarStreamError(f"{where}: byte {offset}: not a tar header (checksum field {stored!r})") from None
    actual = sum(head[:148]) + 8 * 32 + sum(head[156:])
    if actual != expected:
        raise TarStreamError(f"{where}: byte {offset}: tar header checksum {actual} != stored {expected}")


def iter_tar(
    stream: IO[bytes], where: str = "<stream>", check: bool = False, chunk: int = 1 << 22
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, data)`` for every regular file of an uncompressed tar stream, in order.

    Reads ``chunk`` bytes at a time, so a shard of any size streams in bounded memory. Every header must
    carry the ustar magic; ``check=True`` also verifies header checksums (``verify`` does; the training
    reader relies on the shard's sha256 and on decoding instead). pax/GNU long-name records are skipped
    (p2m never writes them).

    Args:
        stream: a binary stream (file, pipe, HTTP body) positioned at the start of the archive.
        where: the shard name or URL, used in error messages.
        check: verify each header's checksum.
        chunk: read size in bytes.

    Raises:
        TarStreamError: a bad header, or the stream ends inside a member or without the end blocks.
    """
    buf = b""
    pos = 0
    base = 0  # absolute stream offset of buf[0]
    zero = bytes(BLOCK)
    while True:
        if len(buf) - pos < BLOCK:
            buf, pos, base = _refill(stream, buf, pos, base, BLOCK, chunk)
            if len(buf) - pos < BLOCK:
                state = "ends" if len(buf) == pos else "has a partial header"
                raise TarStreamError(f"{where}: truncated tar: {state} at byte {base + pos}, before the end blocks")
        head = buf[pos : pos + BLOCK]
        if head[257:262] != b"ustar":
            if head == zero:
                return
            raise TarStreamError(f"{where}: byte {base + pos}: not a ustar header")
        if check:
            _check_header(head, where, base + pos)
        size = _parse_size(head)
        end = pos + BLOCK + size
        if len(buf) < end:
            buf, pos, base = _refill(stream, buf, pos, base, BLOCK + size, chunk)
            end = pos + BLOCK + size
            if len(buf) < end:
                raise TarStreamError(
                    f"{where}: truncated tar: member at byte {base + pos} needs {BLOCK + size} bytes, "
                    f"only {len(buf) - pos} left"
                )
        if head[156] in (48, 0):  # b"0" or NUL: regular file
            name = head[:100].split(b"\0", 1)[0].decode("utf-8")
            if head[345]:
                name = head[345:500].split(b"\0", 1)[0].decode("utf-8") + "/" + name
            yield name, buf[pos + BLOCK : end]
        pos = end + (-size % BLOCK)


def _refill(stream: IO[bytes], buf: bytes, pos: int, base: int, need: int, chunk: int) -> tuple[bytes, int, int]:
    """Drop consumed bytes and read until ``need`` bytes are available after ``pos`` (or EOF)."""
    parts = [buf[pos:]]
    have = len(parts[0])
    while have < need:
        more = stream.read(max(chunk, need - have))
        if not more:
            break
        parts.append(more)
        have += len(more)
    return b"".join(parts), 0, base + pos


def iter_tar_samples(
    stream: IO[bytes], where: str = "<stream>", check: bool = False, keep: Callable[[], bool] | None = None,
    chunk: int = 1 << 22,
) -> Iterator[Sample]:
    """Group consecutive members that share a key: yield ``(key, {field: bytes})``, fields lower-cased.

    The same rules as :func:`iter_tar` and webdataset (key = name up to the first dot of its base name), in
    one loop: this is the training reader's hot path.

    Args:
        stream, where, check, chunk: as :func:`iter_tar`.
        keep: called once at the start of each sample; when it returns False the sample's members are
            stepped over without being copied (how DataLoader workers split a stream sample by sample).

    Raises:
        TarStreamError: as :func:`iter_tar`, or a field repeated within one sample.
    """
    buf = b""
    pos = base = 0
    zero = bytes(BLOCK)
    key: bytes | None = None
    fields: dict[str, bytes] = {}
    names: dict[bytes, str] = {}  # raw suffix -> field name (few distinct values)
    keeping = True
    while True:
        if len(buf) - pos < BLOCK:
            buf, pos, base = _refill(stream, buf, pos, base, BLOCK, chunk)
            if len(buf) - pos < BLOCK:
                state = "ends" if len(buf) == pos else "has a partial header"
                raise TarStreamError(f"{where}: truncated tar: {state} at byte {base + pos}, before the end blocks")
        if buf[pos + 257 : pos + 262] != b"ustar":
            if buf[pos : pos + BLOCK] == zero:
                break
            raise TarStreamError(f"{where}: byte {base + pos}: not a ustar header")
        if check:
            _check_header(buf[pos : pos + BLOCK], where, base + pos)
        raw_size = buf[pos + 124 : pos + 136]
        size = int.from_bytes(raw_size[1:], "big") if raw_size[0] & 0x80 else int(raw_size.rstrip(b"\0 ") or b"0", 8)
        end = pos + BLOCK + size
        if len(buf) < end:
            buf, pos, base = _refill(stream, buf, pos, base, BLOCK + size, chunk)
            end = pos + BLOCK + size
            if len(buf) < end:
                raise TarStreamError(
                    f"{where}: truncated tar: member at byte {base + pos} needs {BLOCK + size} bytes, "
                    f"only {len(buf) - pos} left"
                )
        if buf[pos + 156] in (48, 0):  # b"0" or NUL: a regular file
            name = buf[pos : pos + 100].rstrip(b"\0")
            if buf[pos + 345]:
                name = buf[pos + 345 : pos + 500].rstrip(b"\0") + b"/" + name
            dot = name.find(b".", name.rfind(b"/") + 1)
            k = name[:dot] if dot >= 0 else name
            if k != key:
                if key is not None and keeping:
                    yield key.decode("utf-8"), fields
                key, fields = k, {}
                keeping = keep is None or keep()
            if keeping:
                suffix = name[dot + 1 :] if dot >= 0 else b""
                field = names.get(suffix)
                if field is None:
                    field = names[suffix] = suffix.lower().decode("utf-8")
                if field in fields:
                    raise TarStreamError(f"{where}: sample {k.decode('utf-8')}: member {name!r} appears twice")
                fields[field] = buf[pos + BLOCK : end]
        pos = end + (-size % BLOCK)
    if key is not None and keeping:
        yield key.decode("utf-8"), fields


# ---------------------------------------------------------------------------------------------------- npy

_NPY_HEADERS: dict[tuple[str, tuple[int, ...]], bytes] = {}
#: header bytes -> (dtype, shape, number of items)
_NPY_SPECS: dict[bytes, tuple[np.dtype, tuple[int, ...], int]] = {}
#: p2m pads .npy headers to 16 bytes, not numpy's 64: a kilobyte sample has 8 arrays, and np.load, zipfile and
#: webdataset read any padding (the format only asks for a newline-terminated, space-padded dict literal).
NPY_ALIGN = 16


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` header (format 1.0, C order) of an array of this dtype and shape (cached).

    numpy's own header text (``{'descr': '<f4', 'fortran_order': False, 'shape': (17, 3), }``), padded to a
    multiple of :data:`NPY_ALIGN` bytes instead of numpy's 64.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    cache_key = (dtype.str, shape)
    head = _NPY_HEADERS.get(cache_key)
    if head is None:
        bio = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            bio, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        )
        text = bio.getvalue()[10:].rstrip(b" \n")  # the dict literal, without numpy's padding
        pad = -(10 + len(text) + 1) % NPY_ALIGN
        if len(text) + pad + 1 > 0xFFFF:
            raise ValueError(f"array shape {shape} needs a .npy header longer than format 1.0 allows")
        head = b"\x93NUMPY\x01\x00" + (len(text) + pad + 1).to_bytes(2, "little") + text + b" " * pad + b"\n"
        _NPY_HEADERS[cache_key] = head
    return head


def encode_npy(arr: np.ndarray) -> bytes:
    """``np.save`` bytes of ``arr`` (object arrays are refused)."""
    arr = np.asarray(arr)
    if arr.dtype.hasobject:
        raise ValueError(f"cannot store an object array (dtype {arr.dtype}) without pickle")
    return npy_header(arr.dtype, arr.shape) + arr.tobytes()  # tobytes() is C order


def npy_spec(data: bytes | memoryview) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """Parse an ``.npy`` header: ``(dtype, shape, item count, header length)``, cached by header bytes.

    Raises:
        ValueError: not an npy header, Fortran order, or an object dtype.
    """
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not an .npy array (bad magic)")
    if data[6] == 1:
        hlen = 10 + data[8] + 256 * data[9]
    else:
        hlen = 12 + int.from_bytes(data[8:12], "little")
    head = bytes(data[:hlen])
    spec = _NPY_SPECS.get(head)
    if spec is None:
        bio = io.BytesIO(head)
        version = np.lib.format.read_magic(bio)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unsupported .npy format version {version}")
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(bio)
        if fortran and len(shape) > 1:
            raise ValueError("Fortran-ordered .npy arrays are not supported")
        if dtype.hasobject:
            raise ValueError(f"object dtype {dtype} needs pickle; refused")
        count = 1
        for n in shape:
            count *= n
        spec = _NPY_SPECS[head] = (dtype, tuple(shape), count)
    return spec[0], spec[1], spec[2], hlen


def decode_npy(data: bytes | memoryview) -> np.ndarray:
    """Decode ``.npy`` bytes into a read-only array that views ``data`` (no copy)."""
    dtype, shape, count, hlen = npy_spec(data)
    if len(data) - hlen != count * dtype.itemsize:
        raise ValueError(f".npy data is {len(data) - hlen} bytes; {dtype}{list(shape)} needs {count * dtype.itemsize}")
    return np.frombuffer(data, dtype, count, hlen).reshape(shape)


# ---------------------------------------------------------------------------------------------------- npz

_LOCAL = struct.Struct("<IHHHHHIIIHH")  # 30 bytes
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # 46 bytes
_END = struct.Struct("<IHHHHIIH")  # 22 bytes
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01, fixed for reproducible bytes
_LOCAL_HEAD = _LOCAL.pack(0x04034B50, 20, 0, 0, 0, _DOS_DATE, 0, 0, 0, 0, 0)[:14]  # up to the CRC field
_CENTRAL_HEAD = _CENTRAL.pack(0x02014B50, 20, 20, 0, 0, 0, _DOS_DATE, *[0] * 10)[:16]


class NpyEntry:
    """One array slot of an npz: name, ``.npy`` header and data size, fixed; get them from :func:`npy_entry`.

    Attributes:
        name: array name (the zip member is ``name.npy``).
        head: the ``.npy`` header.
        nbytes: data bytes after the header.
        head_crc: CRC-32 of the header, so that an entry's CRC is ``zlib.crc32(data, head_crc)``.
    """

    __slots__ = ("name", "head", "nbytes", "head_crc", "fname")

    def __init__(self, name: str, head: bytes, nbytes: int) -> None:
        self.name, self.head, self.nbytes = name, head, nbytes
        self.head_crc = zlib.crc32(head)
        self.fname = f"{name}.npy".encode("ascii")


_ENTRIES: dict[tuple[str, str, tuple[int, ...]], NpyEntry] = {}


def npy_entry(name: str, dtype: np.dtype | str, shape: tuple[int, ...]) -> NpyEntry:
    """The (cached, shared) :class:`NpyEntry` of an array ``name`` of this dtype and shape.

    Raises:
        ValueError: a name that is not ASCII or holds ``/``, or an object dtype (it would need pickle).
    """
    dtype = np.dtype(dtype)
    ck = (name, dtype.str, tuple(shape))
    entry = _ENTRIES.get(ck)
    if entry is None:
        if dtype.hasobject:
            raise ValueError(f"array {name!r}: object dtype {dtype} cannot be stored without pickle")
        if not name.isascii() or "/" in name or not name:
            raise ValueError(f"array name {name!r}: use ASCII without '/'")
        count = 1
        for n in ck[2]:
            count *= n
        entry = _ENTRIES[ck] = NpyEntry(name, npy_header(dtype, ck[2]), count * dtype.itemsize)
    return entry


class _NpzLayout:
    """Everything of a stored npz that a tuple of entries fixes: all bytes except the data and the CRCs.

    ``parts`` is the list that ``b"".join`` turns into the file, with ``None`` where the CRCs and data go:
    ``[local head, CRC, local tail, data] * n + [central head, CRC, central tail] * n + [end record]``.
    """

    __slots__ = ("parts", "sizes", "head_crcs")

    def __init__(self, entries: tuple[NpyEntry, ...]) -> None:
        local_parts: list[bytes | None] = []
        central_parts: list[bytes | None] = []
        offset = 0
        for e in entries:
            size = len(e.head) + e.nbytes
            local = _LOCAL.pack(0x04034B50, 20, 0, 0, 0, _DOS_DATE, 0, size, size, len(e.fname), 0)
            central = _CENTRAL.pack(0x02014B50, 20, 20, 0, 0, 0, _DOS_DATE, 0, size, size, len(e.fname), 0, 0, 0, 0, 0,
                                    offset)  # fmt: skip
            local_parts += (local[:14], None, local[18:] + e.fname + e.head, None)
            central_parts += (central[:16], None, central[20:] + e.fname)
            offset += len(local) + len(e.fname) + size
        cd_size = sum(16 + 4 + len(tail) for tail in central_parts[2::3])  # head + CRC + tail
        end = _END.pack(0x06054B50, 0, 0, len(entries), len(entries), cd_size, offset, 0)
        self.parts = [*local_parts, *central_parts, end]
        self.sizes = [e.nbytes for e in entries]
        self.head_crcs = [e.head_crc for e in entries]


_LAYOUTS: dict[tuple[NpyEntry, ...], _NpzLayout] = {}
_U32 = struct.Struct("<I").pack


def pack_npz(entries: tuple[NpyEntry, ...], datas: Sequence[bytes]) -> bytes:
    """Bytes of ``np.savez`` of these arrays: a stored (uncompressed) zip of ``name.npy`` entries, fixed dates.

    Args:
        entries: one :class:`NpyEntry` per array, in order (from :func:`npy_entry`, so that layouts are cached).
        datas: the C-order data bytes of each array (``entries[i].nbytes`` long).

    Raises:
        ValueError: a data block whose length does not match its entry.
    """
    layout = _LAYOUTS.get(entries)
    if layout is None:
        if len(_LAYOUTS) > 4096:  # many distinct layouts (e.g. free-length arrays): keep the cache bounded
            _LAYOUTS.clear()
        layout = _LAYOUTS[entries] = _NpzLayout(entries)
    if list(map(len, datas)) != layout.sizes:
        bad = next(i for i, e in enumerate(entries) if i >= len(datas) or len(datas[i]) != e.nbytes)
        raise ValueError(f"array {entries[bad].name!r}: data is not the {entries[bad].nbytes} bytes its header says")
    n = len(entries)
    crcs = list(map(_U32, map(zlib.crc32, datas, layout.head_crcs)))  # CRC of header + data, header's precomputed
    parts = layout.parts.copy()
    parts[1 : 4 * n : 4] = crcs
    parts[3 : 4 * n : 4] = datas
    parts[4 * n + 1 : 7 * n : 3] = crcs
    return b"".join(parts)


def encode_npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Bytes of ``np.savez(**arrays)`` (see :func:`pack_npz`); names must be ASCII without ``/``."""
    entries, datas = [], []
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        entries.append(npy_entry(name, arr.dtype, arr.shape))
        datas.append(arr.tobytes())  # C order
    return pack_npz(tuple(entries), datas)


def npz_entries(data: bytes | memoryview) -> dict[str, memoryview]:
    """The raw ``.npy`` bytes of each entry of a stored npz, by array name, without copying.

    Raises:
        ValueError: a compressed entry, a data descriptor, or a truncated file (use ``np.load`` for those).
    """
    view = memoryview(data)
    out: dict[str, memoryview] = {}
    pos = 0
    end = len(view)
    while pos + 4 <= end and view[pos : pos + 4] == b"PK\x03\x04":
        if pos + 30 > end:
            raise ValueError("npz truncated inside a local header")
        _, _, flags, method, _, _, _, csize, usize, nlen, elen = _LOCAL.unpack_from(view, pos)
        if method != 0 or flags & 0x08 or csize != usize:
            raise ValueError("npz entry is compressed or uses a data descriptor")
        name = bytes(view[pos + 30 : pos + 30 + nlen]).decode("utf-8")
        start = pos + 30 + nlen + elen
        if start + csize > end:
            raise ValueError(f"npz truncated inside entry {name}")
        out[name[:-4] if name.endswith(".npy") else name] = view[start : start + csize]
        pos = start + csize
    if not out:
        raise ValueError("not a zip/npz file")
    return out


def decode_npz(data: bytes | memoryview) -> dict[str, np.ndarray]:
    """Decode npz bytes into ``{name: array}``; fast for stored entries, ``np.load`` for anything else."""
    try:
        return {name: decode_npy(raw) for name, raw in npz_entries(data).items()}
    except ValueError:
        with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
