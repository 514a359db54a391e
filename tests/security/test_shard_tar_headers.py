"""The training reader trusts no tar header and no shard file (issue 12 item 6): crafted headers and changed
shards give one ShardError naming the shard (and the byte offset), never a hang, an OverflowError or bad data."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _toy_dataset import toy_dataset

from p2m.shards import build_shards
from p2m.shards.codec import BLOCK

REPO = Path(__file__).resolve().parents[2]


def _dataset(root: Path) -> Path:
    return toy_dataset(root, frames=6, seed=1)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("tar")
    build_shards([_dataset(base / "ds")], base / "shards", maxcount=100)
    return base / "shards"


def _checksum(head: bytearray) -> None:
    head[148:156] = b" " * 8
    head[148:156] = b"%06o\0 " % sum(head)


def _craft(clean: Path, dst: Path, change, reindex: bool = True) -> Path:
    """A copy whose train-000000.tar has ``change(bytearray)`` applied; the index gets its new sha256 and size
    (an attacker who writes the shard writes the index too) unless ``reindex`` is False."""
    dst.mkdir()
    for p in clean.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    tar = dst / "train-000000.tar"
    data = bytearray(tar.read_bytes())
    change(data)
    tar.write_bytes(bytes(data))
    if reindex:
        index = json.loads((dst / "index.json").read_text())
        rec = index["splits"]["train"]["shards"][0]
        rec["sha256"], rec["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
        (dst / "index.json").write_text(json.dumps(index))
    return dst


def _read_in_child(shards: Path) -> subprocess.CompletedProcess:
    """Read every batch in a child process (an old reader looped forever on a negative size)."""
    code = textwrap.dedent(f"""
        from p2m.errors import P2MError
        from p2m.shards import make_loader
        try:
            n = sum(len(b["key"]) for b in make_loader({str(shards)!r}, "train", 1, shuffle_buffer=0))
            print("read", n)
        except P2MError as exc:
            print("P2MError:", exc)
    """)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    )
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def _second_header(data: bytearray) -> int:
    """Offset of the second member's header (each pose-only sample is one member: header + record)."""
    size = int(data[124:136].strip(b"\0 "), 8)
    return BLOCK + -(-size // BLOCK) * BLOCK


def _set_size(field: bytes):
    def change(data: bytearray) -> None:
        at = _second_header(data)
        head = bytearray(data[at : at + BLOCK])
        head[124:136] = field
        _checksum(head)
        data[at : at + BLOCK] = head

    return change


CASES = {
    "negative size": (_set_size(b"-0000000001\0"), "size field"),
    "huge base-256 size": (_set_size(b"\x80" + (2**80).to_bytes(11, "big")), "size field"),
    "size beyond the limit": (_set_size(b"%011o\0" % (8**11 - 1)), "more than the"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_size_fields_are_one_clear_error(clean, tmp_path, case):
    change, message = CASES[case]
    shards = _craft(clean, tmp_path / "s", change)
    proc = _read_in_child(shards)
    assert proc.returncode == 0, proc.stderr
    at = _second_header(bytearray((clean / "train-000000.tar").read_bytes()))
    assert proc.stdout.startswith("P2MError: ") and message in proc.stdout, proc.stdout + proc.stderr
    assert f"train-000000.tar: byte {at}: " in proc.stdout and len(proc.stdout.strip().splitlines()) == 1


def test_a_bad_header_checksum_is_refused(clean, tmp_path):
    from p2m.errors import ShardError
    from p2m.shards import make_loader

    def flip_mode_bit(data: bytearray) -> None:
        at = _second_header(data)
        data[at + 100] ^= 0x01  # a mode digit: the header no longer sums to its checksum

    shards = _craft(clean, tmp_path / "s", flip_mode_bit)
    at = _second_header(bytearray((clean / "train-000000.tar").read_bytes()))
    with pytest.raises(ShardError, match=rf"train-000000\.tar: byte {at}: tar header checksum"):
        list(make_loader(shards, "train", 1, shuffle_buffer=0))


@pytest.mark.parametrize("name", [b"../escape.npy", b"/abs/k.npy"])
def test_member_names_outside_the_archive_are_refused(clean, tmp_path, name):
    from p2m.errors import ShardError
    from p2m.shards import make_loader

    def rename(data: bytearray) -> None:
        head = bytearray(data[:BLOCK])
        head[:100] = name.ljust(100, b"\0")
        _checksum(head)
        data[:BLOCK] = head

    shards = _craft(clean, tmp_path / "s", rename)
    with pytest.raises(ShardError, match=r"train-000000\.tar: byte 0: member name .* leaves the archive"):
        list(make_loader(shards, "train", 1, shuffle_buffer=0))


def test_a_changed_shard_fails_its_sha256_before_it_is_read(clean, tmp_path):
    from p2m.errors import ShardError
    from p2m.shards import make_loader

    def change_a_number(data: bytearray) -> None:
        data[BLOCK + 300] ^= 0x40  # inside the first record's data: headers stay valid, a joint changes

    shards = _craft(clean, tmp_path / "s", change_a_number, reindex=False)
    loader = make_loader(shards, "train", 1, shuffle_buffer=0)
    with pytest.raises(ShardError, match=r"train-000000\.tar: sha256 .*, index.json says"):
        next(iter(loader))


def test_streamed_shards_say_why_their_sha256_is_not_checked(clean, caplog):
    from p2m.shards import stages

    tar = clean / "train-000000.tar"
    digest = hashlib.sha256(tar.read_bytes()).hexdigest()
    stages._warned_streams = False
    with caplog.at_level(logging.INFO, logger="p2m.shards.stages"):
        samples = list(stages.tar_samples(stages.url_opener([(f"pipe:cat {tar}", None, digest)])))
    assert len(samples) == 6
    assert "a streamed shard's sha256 cannot be checked before it is read" in caplog.text
