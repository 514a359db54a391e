"""The byte formats p2m writes itself are the standard ones: tarfile, zipfile and np.load read them."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from p2m.shards.codec import TAR_END, TarStreamError, iter_tar_samples, record_header, tar_member


def test_tar_members_are_standard_ustar():
    data = tar_member("k_s001.json", b'{"a": 1}') + tar_member("k_s001.npy", b"x" * 700) + TAR_END
    assert len(data) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        infos = tf.getmembers()
        assert [(i.name, i.size, i.mtime, i.mode, i.uname) for i in infos] == [
            ("k_s001.json", 8, 0, 0o444, "p2m"),
            ("k_s001.npy", 700, 0, 0o444, "p2m"),
        ]
        assert tf.extractfile(infos[1]).read() == b"x" * 700
    assert list(iter_tar_samples(io.BytesIO(data), check=True)) == [
        ("k_s001", {"json": b'{"a": 1}', "npy": b"x" * 700})
    ]
    with pytest.raises(TarStreamError, match="truncated"):
        list(iter_tar_samples(io.BytesIO(data[:900])))
    bad = bytearray(data)
    bad[0] ^= 1
    with pytest.raises(TarStreamError, match="checksum"):
        list(iter_tar_samples(io.BytesIO(bytes(bad)), check=True))


def test_a_record_is_what_numpy_writes():
    fields = (("j2d", "<f4", (17, 3)), ("bbox", "<f4", (4,)), ("model", "S11", ()))
    values = {
        "j2d": np.arange(51, dtype=np.float32).reshape(17, 3),
        "bbox": np.ones(4, np.float32),
        "model": np.array(b"anny/cmu_mb"),
    }
    head, size = record_header(fields)
    blob = head + b"".join(values[name].tobytes() for name, _, _ in fields)
    assert len(blob) == len(head) + size and len(head) % 16 == 0
    record = np.load(io.BytesIO(blob), allow_pickle=False)
    assert record.shape == () and record.dtype.names == ("j2d", "bbox", "model")
    for name, value in values.items():
        assert np.array_equal(record[name], value)
    bio = io.BytesIO()
    np.save(bio, np.array(tuple(values.values()), dtype=np.dtype([f[:2] + (f[2],) for f in fields])))
    assert bio.getvalue()[-size:] == blob[-size:]  # numpy's own bytes after its (longer) header
