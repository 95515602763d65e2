"""The distribution: its name and version as installed."""
from __future__ import annotations

import importlib.metadata

import fabric

DISTRIBUTION = "zmq-fabric"


def test_the_installed_distribution_has_the_package_version():
    # One source: fabric/_version.py, read by setup.cfg (version = attr: ...).
    assert importlib.metadata.version(DISTRIBUTION) == fabric.__version__
