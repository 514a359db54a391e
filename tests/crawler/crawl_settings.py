"""Settings and helpers of the crawler tests, in a module of its own so that test files import them by a unique
name (``from conftest import ...`` would pick whichever test folder's conftest pytest loaded first)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "external-fixtures"
TEST_UA = "p2m-test/1.0 (+https://example.invalid/p2m-tests)"
A, B, C, D, E = range(5)

# Settings that keep a crawl of the trap site within a few seconds.
FAST = dict(
    allow_private=True,
    user_agent=TEST_UA,
    depth=2,
    concurrency=8,
    per_host=2,
    delay=0.05,
    max_bytes=2 * 1024 * 1024,
    max_pixels=4_000_000,
    min_size_px=32,
    connect_timeout=2.0,
    read_timeout=0.5,
    total_timeout=3.0,
    retries=2,
    backoff_base=0.1,
    backoff_max=1.0,
    progress=False,
    manifest_every_s=0,
)


def fixture_dir(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_dir():
        pytest.skip(f"shared fixture folder {path} is absent (it lives beside the repository, in ../shared)")
    return path
