"""The distribution: its name and version as installed, and what its wheel holds.

The wheel test builds a wheel from a copy of the source (no network: no build isolation, no
dependencies) and runs from it outside the clone, as ``pip install zmq-fabric`` would.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import fabric

DISTRIBUTION = "zmq-fabric"
ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fabric", "nameservice")


def test_the_installed_distribution_has_the_package_version():
    # One source: fabric/_version.py, read by setup.cfg (version = attr: ...).
    assert importlib.metadata.version(DISTRIBUTION) == fabric.__version__


def test_the_packages_refer_to_no_file_of_the_clone():
    # What the packages run must be in them: a wheel has no examples/ directory.
    found = [f"{path.relative_to(ROOT)}: {line.strip()}"
             for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
             for line in path.read_text().splitlines() if "examples/" in line]
    assert not found, "\n".join(found)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the clone (its build/ and egg-info stay untouched)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
        ".hypothesis", "bench-out"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tmp / "dist"), str(src)],
                   check=True, capture_output=True, timeout=120)
    [built] = (tmp / "dist").glob("*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_the_packages_their_type_marks_the_demo_and_the_license(wheel):
    assert wheel.name.startswith(f"zmq_fabric-{fabric.__version__}-")
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        headers = whl.read(metadata).decode().partition("\n\n")[0].splitlines()
    for name in ("fabric/py.typed", "nameservice/py.typed", "fabric/_version.py",
                 "fabric/butterfly/producer.py", "fabric/butterfly/consumer.py"):
        assert name in names
    assert any(n.endswith((".dist-info/LICENSE", ".dist-info/licenses/LICENSE")) for n in names), \
        sorted(n for n in names if ".dist-info/" in n)
    assert {n.split("/")[0] for n in names} == {*PACKAGES, metadata.split("/")[0]}
    assert f"Name: {DISTRIBUTION}" in headers
    assert f"Version: {fabric.__version__}" in headers


@pytest.mark.slow
def test_the_demo_components_load_by_module_name_from_the_unpacked_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as whl:
        whl.extractall(site)  # a pure-Python wheel installs by unpacking
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = (
        "import fabric, sys\n"
        "from fabric.butterfly.scenario import CONSUMER, PRODUCER\n"
        "from fabric.runtime.component import load_target\n"
        f"assert fabric.__file__.startswith({str(site)!r}), fabric.__file__\n"
        "for target in (PRODUCER, CONSUMER):\n"
        "    func = load_target(target)\n"
        f"    assert func.__code__.co_filename.startswith({str(site)!r}), func.__code__\n"
        "print('ok')\n")
    env = {**os.environ, "PYTHONPATH": str(site)}  # the wheel's packages come before the clone's
    done = subprocess.run([sys.executable, "-c", check], cwd=elsewhere, env=env, check=False,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
