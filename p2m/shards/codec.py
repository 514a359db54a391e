"""Byte formats of a shard, written and parsed without per-member Python overhead: ustar tar and ``.npy``.

The standard modules are correct but slow for kilobyte samples (``tarfile.addfile`` ~25 us per member). The
writers here emit what a POSIX ustar archive and ``np.save`` would, except that ``.npy`` headers are padded to 16
bytes instead of 64 (see :data:`NPY_ALIGN`), so ``tar``, ``tarfile``, ``webdataset`` and ``np.load`` read them
unchanged. :func:`iter_tar_samples` is the one tar parser of the reader: it expands a tar stream and groups its
members by key in one loop, and bounds every header field it uses (``verify`` reads with webdataset instead).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import IO

import numpy as np

from p2m.errors import ShardError

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


class TarStreamError(ShardError, ValueError):
    """A tar stream that ends inside a member, or holds a header that is not a valid ustar header (a p2m error:
    the CLI prints it as one line)."""


#: The largest member the reader accepts (a pose sample is ~1.5 KB, a frame a few MB).
MAX_MEMBER = 1 << 30
_OCTAL = frozenset(b"01234567")


def _member_size(head: bytes, where: str, offset: int) -> int:
    """The size field (bytes 124-136) as p2m writes it: octal digits, NUL/space padded, at most :data:`MAX_MEMBER`."""
    field = head[124:136]
    digits = field.strip(b"\0 ")
    if field[0] & 0x80 or not digits or not _OCTAL.issuperset(digits):
        raise TarStreamError(
            f"{where}: byte {offset}: tar header size field {field!r} is not an octal number"
        )
    size = int(digits, 8)
    if size > MAX_MEMBER:
        raise TarStreamError(
            f"{where}: byte {offset}: tar member of {size} bytes, more than the {MAX_MEMBER} allowed"
        )
    return size


_CONST_SUMS: dict[bytes, int] = {}


def _check_header(head: bytes, where: str, offset: int) -> None:
    """Verify the header checksum (the byte sum with the checksum field read as spaces).

    The fields that differ between p2m's members are the name (0-100), the size (124-136) and the checksum; the
    sum of the rest is cached by its bytes, so a p2m header costs a sum over 112 bytes, not 512.
    """
    stored = head[148:156].strip(b"\0 ")
    if not stored or not _OCTAL.issuperset(stored):
        raise TarStreamError(f"{where}: byte {offset}: not a tar header (checksum field {stored!r})")
    const = head[100:124] + head[136:148] + head[156:]
    base = _CONST_SUMS.get(const)
    if base is None:
        if len(_CONST_SUMS) > 64:
            _CONST_SUMS.clear()
        base = _CONST_SUMS[const] = sum(const) + 8 * 32
    actual = base + sum(head[:100]) + sum(head[124:136])
    if actual != int(stored, 8):
        raise TarStreamError(
            f"{where}: byte {offset}: tar header checksum {actual} != stored {int(stored, 8)}"
        )


def _refill(
    stream: IO[bytes], buf: bytes, pos: int, base: int, need: int, chunk: int
) -> tuple[bytes, int, int]:
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
    stream: IO[bytes],
    where: str = "<stream>",
    check: bool = True,
    keep: Callable[[], bool] | None = None,
    chunk: int = 1 << 22,
) -> Iterator[Sample]:
    """Expand a tar stream and group consecutive members that share a key: yield ``(key, {field: bytes})``.

    The key is the member name up to the first dot of its base name, the field the rest, lower-cased (webdataset's
    rule). Reads ``chunk`` bytes at a time, so a shard of any size streams in bounded memory. pax/GNU records and
    directories are stepped over (p2m never writes them).

    Args:
        stream: a binary stream (file, pipe, HTTP body) positioned at the start of the archive.
        where: the shard name or URL, used in error messages.
        check: verify every header's checksum (False only to measure what the check costs).
        keep: called once at the start of each sample; when it returns False the sample's members are
            stepped over without being copied (how DataLoader workers split a stream sample by sample).
        chunk: read size in bytes.

    Raises:
        TarStreamError: naming ``where`` and the byte offset: a header that is not ustar, a bad size or
            checksum, an absolute or ``..`` member name, a field repeated within one sample, or a stream that
            ends inside a member or without the end blocks.
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
                raise TarStreamError(
                    f"{where}: truncated tar: {state} at byte {base + pos}, before the end blocks"
                )
        head = buf[pos : pos + BLOCK]
        if head[257:262] != b"ustar":
            if head == zero:
                break
            raise TarStreamError(f"{where}: byte {base + pos}: not a ustar header")
        if check:
            _check_header(head, where, base + pos)
        size = _member_size(head, where, base + pos)
        end = pos + BLOCK + size
        if len(buf) < end:
            buf, pos, base = _refill(stream, buf, pos, base, BLOCK + size, chunk)
            end = pos + BLOCK + size
            if len(buf) < end:
                raise TarStreamError(
                    f"{where}: truncated tar: member at byte {base + pos} needs {BLOCK + size} bytes, "
                    f"only {len(buf) - pos} left"
                )
        if head[156] in (48, 0):  # b"0" or NUL: a regular file
            name = head[:100].rstrip(b"\0")
            if head[345]:
                name = head[345:500].rstrip(b"\0") + b"/" + name
            if name[:1] == b"/" or b"../" in name or name.endswith(b".."):
                raise TarStreamError(f"{where}: byte {base + pos}: member name {name!r} leaves the archive")
            dot = name.find(b".", name.rfind(b"/") + 1)
            k = name[:dot] if dot >= 0 else name
            if k != key:
                if key is not None and keeping:
                    yield key.decode("utf-8", "replace"), fields
                key, fields = k, {}
                keeping = keep is None or keep()
            if keeping:
                suffix = name[dot + 1 :] if dot >= 0 else b""
                field = names.get(suffix)
                if field is None:
                    field = names[suffix] = suffix.lower().decode("utf-8", "replace")
                if field in fields:
                    raise TarStreamError(
                        f"{where}: byte {base + pos}: member {name!r} appears twice in its sample"
                    )
                fields[field] = buf[pos + BLOCK : end]
        pos = end + (-size % BLOCK)
    if key is not None and keeping:
        yield key.decode("utf-8", "replace"), fields


# ---------------------------------------------------------------------------------------------------- npy

_NPY_HEADERS: dict[tuple[np.dtype, tuple[int, ...]], bytes] = {}
#: header bytes -> (dtype, shape, number of items)
_NPY_SPECS: dict[bytes, tuple[np.dtype, tuple[int, ...], int]] = {}
#: p2m pads .npy headers to 16 bytes, not numpy's 64: every byte counts in a 1.5 KB sample, and np.load and
#: webdataset read any padding (the format only asks for a newline-terminated, space-padded dict literal).
NPY_ALIGN = 16


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` header (format 1.0, C order) of an array of this dtype and shape (cached).

    numpy's own header text (``{'descr': '<f4', 'fortran_order': False, 'shape': (17, 3), }``), padded to a
    multiple of :data:`NPY_ALIGN` bytes instead of numpy's 64.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    cache_key = (dtype, shape)  # the dtype itself: a structured dtype's .str is only its size
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
        reader = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
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
        raise ValueError(
            f".npy data is {len(data) - hlen} bytes; {dtype}{list(shape)} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(data, dtype, count, hlen).reshape(shape)


#: A field of a sample record: (name, numpy dtype string, shape).
Field = tuple[str, str, tuple[int, ...]]
_RECORDS: dict[tuple[Field, ...], tuple[bytes, int]] = {}


def record_header(fields: tuple[Field, ...]) -> tuple[bytes, int]:
    """The ``.npy`` header of a 0-d structured array with these packed fields, and its data size (cached).

    ``header + b"".join(field bytes in order)`` is what ``np.save`` writes for such a record (with 16-byte
    header padding), so ``np.load(...)["j2d"]`` gives the field back.
    """
    hit = _RECORDS.get(fields)
    if hit is None:
        dtype = np.dtype([(name, kind, shape) for name, kind, shape in fields])
        if (
            len(_RECORDS) > 4096
        ):  # many distinct layouts (free-length body parameters): keep the cache bounded
            _RECORDS.clear()
        hit = _RECORDS[fields] = (npy_header(dtype, ()), dtype.itemsize)
    return hit
