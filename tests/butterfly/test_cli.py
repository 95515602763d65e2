"""User mistakes on the component, butterfly and intermediary commands: one line, right code."""
from __future__ import annotations

import subprocess
import uuid

import pytest

from tests.datapath.conftest import FABRIC, ROOT

COMPONENT = "fabric.butterfly.producer"


@pytest.mark.parametrize("args, code, words", [
    (["component", "run", "nosuch_module_x:main", "--ns", "127.0.0.1:1"], 2, "cannot import"),
    (["component", "run", "main", "--ns", "127.0.0.1:1"], 2, "MODULE:FUNC"),
    (["component", "run", f"{COMPONENT}:nope", "--ns", "127.0.0.1:1"], 2, "has no nope"),
    (["component", "run", "no/such/file.py:main", "--ns", "127.0.0.1:1"], 2, "no such file"),
    (["component", "run", f"{COMPONENT}:CHANNEL", "--ns", "127.0.0.1:1"], 2, "not an async"),
    (["component", "run", f"{COMPONENT}:main", "-p", "novalue", "--ns", "127.0.0.1:1"], 2,
     "KEY=VALUE"),
    (["component", "run", f"{COMPONENT}:main"], 1, "no name service"),
    (["component", "run", f"{COMPONENT}:main", "--control", "x", "--ns", "127.0.0.1:1"], 2,
     "--control"),
    (["component", "run", f"{COMPONENT}:main", "--ns", "nohost"], 2, "nohost"),
    (["butterfly", "--messages", "5"], 2, "--messages"),
    (["intermediary", "--channel", "x", "--listen", "nonsense"], 2, "HOST:PORT"),
    (["intermediary", "--channel", "x", "--ns", "not an address"], 2, ""),
])
def test_user_mistakes_are_one_line_and_an_exit_code(args, code, words):
    # A cluster name nobody advertises: discovery must find nothing.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT,
           "FABRIC_NS_CLUSTER": f"none-{uuid.uuid4().hex}"}
    proc = subprocess.run([FABRIC, *args], capture_output=True, timeout=60, cwd=ROOT, env=env)
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert len(err.strip().splitlines()) == 1, err
    assert words in err
    assert "Traceback" not in err
