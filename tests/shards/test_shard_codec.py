"""The byte formats p2m writes itself are the standard ones: tarfile, zipfile and np.load read them."""

from __future__ import annotations

import io
import tarfile
import zipfile

import numpy as np
import pytest

from p2m.shards.codec import (
    TAR_END,
    TarStreamError,
    decode_npz,
    encode_npz,
    iter_tar,
    iter_tar_samples,
    tar_member,
)


def test_tar_members_are_standard_ustar():
    data = tar_member("k_s001.json", b'{"a": 1}') + tar_member("k_s001.npz", b"x" * 700) + TAR_END
    assert len(data) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        infos = tf.getmembers()
        assert [(i.name, i.size, i.mtime, i.mode, i.uname) for i in infos] == [
            ("k_s001.json", 8, 0, 0o444, "p2m"), ("k_s001.npz", 700, 0, 0o444, "p2m")]  # fmt: skip
        assert tf.extractfile(infos[1]).read() == b"x" * 700
    assert list(iter_tar(io.BytesIO(data), check=True)) == [("k_s001.json", b'{"a": 1}'), ("k_s001.npz", b"x" * 700)]
    assert list(iter_tar_samples(io.BytesIO(data))) == [("k_s001", {"json": b'{"a": 1}', "npz": b"x" * 700})]
    with pytest.raises(TarStreamError, match="truncated"):
        list(iter_tar(io.BytesIO(data[:900])))
    bad = bytearray(data)
    bad[0] ^= 1
    with pytest.raises(TarStreamError, match="checksum"):
        list(iter_tar(io.BytesIO(bytes(bad)), check=True))


def test_npz_is_what_numpy_writes():
    arrays = {"j2d": np.arange(51, dtype=np.float32).reshape(17, 3), "pose": np.ones(72, np.float32),
              "model": np.array("anny/default")}  # fmt: skip
    blob = encode_npz(arrays)
    assert zipfile.ZipFile(io.BytesIO(blob)).testzip() is None
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        assert sorted(z.files) == ["j2d", "model", "pose"]
        assert np.array_equal(z["j2d"], arrays["j2d"]) and str(z["model"]) == "anny/default"
    assert encode_npz(arrays) == blob  # fixed dates: the same arrays give the same bytes
    fast = decode_npz(blob)
    assert all(np.array_equal(fast[k], v) for k, v in arrays.items())
    compressed = io.BytesIO()
    np.savez_compressed(compressed, **arrays)
    assert np.array_equal(decode_npz(compressed.getvalue())["pose"], arrays["pose"])  # the np.load fallback
