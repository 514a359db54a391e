"""Atomic writes: the old file survives a failed write, the new one appears whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from p2m.errors import P2MError
from p2m.io import atomic_write, read_json, write_json


def test_write_json_round_trip(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_json(path, {"x": [1, 2]})
    assert read_json(path) == {"x": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"old": True})
    with pytest.raises(RuntimeError):
        with atomic_write(path, "w") as fh:
            fh.write('{"new": ')
            raise RuntimeError("boom")
    assert read_json(path) == {"old": True}
    assert sorted(os.listdir(tmp_path)) == ["a.json"]


def test_killed_writer_leaves_old_file(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"old": True})
    code = (
        "import os, signal, sys\n"
        "from p2m.io import atomic_write\n"
        "with atomic_write(sys.argv[1], 'w') as fh:\n"
        "    fh.write('{\"new\": [' + '1,' * 100000)\n"
        "    fh.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)])
    assert proc.returncode == -signal.SIGKILL
    assert read_json(path) == {"old": True}


def test_read_json_names_file_and_position(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"a": 1,\n "b": }')
    with pytest.raises(P2MError, match=r"bad\.json: invalid JSON at line 2"):
        read_json(path)
    with pytest.raises(P2MError, match="file not found"):
        read_json(tmp_path / "missing.json")
