"""Session fixtures for the shard tests: small dataset folders in the layout of Contract 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from shard_fixtures import write_h36m_like, write_photos


@pytest.fixture(scope="session")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three dataset folders: a dotted-name Human3.6M-like one, a synthetic one with another body model, photos."""
    base = tmp_path_factory.mktemp("datasets")
    return {
        "h36m": write_h36m_like(base / "Human3.6M.v1", "h36m", subjects=(1, 5, 9), frames=5),
        "synth": write_h36m_like(
            base / "synth", "synth", subjects=(1, 9), frames=3, model="smpl", pose_len=72, seed=3
        ),
        "crawl": write_photos(base / "crawl"),
    }


@pytest.fixture(scope="session")
def images_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_h36m_like(
        tmp_path_factory.mktemp("img") / "Human3.6M.v1", "h36m", subjects=(1,), frames=2, images=True
    )
