"""Fixtures for the storage tests."""
import pytest


@pytest.fixture
def data_dir(tmp_path):
    """A fresh data directory on the real disk."""
    return str(tmp_path / "raft")
