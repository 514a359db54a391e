"""Helpers of the Ray tests (a module of its own, so that test files import it by a unique name)."""

from __future__ import annotations

from pathlib import Path


def tree_bytes(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (file names in ``skip`` left out)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }
