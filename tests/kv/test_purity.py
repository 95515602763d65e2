"""The state machine package is pure: it imports nothing that does I/O, reads a clock or spawns."""
from __future__ import annotations

import ast
from pathlib import Path

import nameservice.kv

IMPURE = {
    "asyncio", "os", "random", "select", "selectors", "socket", "subprocess", "sys",
    "threading", "multiprocessing", "time", "datetime", "uuid", "zmq", "pathlib", "io", "logging",
}


def test_no_module_of_the_package_imports_io_clock_or_threads() -> None:
    package = Path(nameservice.kv.__file__).parent
    found = {}
    for source in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            bad = [n for n in names if n.split(".")[0] in IMPURE]
            if bad:
                found[source.name] = bad
    assert found == {}
    assert len(list(package.glob("*.py"))) >= 10  # the walk really saw the modules
