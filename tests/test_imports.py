"""Imports run one way: every module imports only from its own layer or from layers below it.

The layers, lowest first (docs/architecture.md draws them):

    nameservice.errors, nameservice.lazy,       the error tree; lazy package exports; the
      nameservice.logs, fabric._version         logging setup and events; the version (read
                                                by setup.cfg too)
    nameservice.raft                            the pure Raft core
    nameservice.storage | nameservice.kv        durable log | key-value state machine
    nameservice.wire, .address, .control,       what client, server and fabric processes share
      .discovery, .metrics, .security
    nameservice.client                          the client library
    nameservice.names                           names with leases, on the client
    nameservice.server                          the daemon (a client of its peers too)
    fabric.errors, .protocol, .timing,          the data path's shared pure modules
      .endpoints, .drain
    fabric.ports | fabric.intermediary          the two ends of a hop, which never import each other
    fabric.runtime                              components, resolver, registration
    fabric.butterfly                            the demo
    fabric.cli                                  the command line

Every import counts, at module level, inside a function or under ``TYPE_CHECKING``: a
function-level import that runs upward is the same dependency, only hidden.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fabric

ROOT = Path(__file__).resolve().parent.parent

# (rank, units): a module belongs to the unit that is the longest prefix of its name.
LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("nameservice.errors", "nameservice.lazy", "nameservice.logs", "fabric._version")),
    (1, ("nameservice.raft",)),
    (2, ("nameservice.storage",)),
    (2, ("nameservice.kv",)),
    (3, ("nameservice.wire", "nameservice.address", "nameservice.control",
         "nameservice.discovery", "nameservice.metrics", "nameservice.security")),
    (4, ("nameservice.client",)),
    (5, ("nameservice.names",)),
    (6, ("nameservice.server",)),
    (7, ("fabric.errors", "fabric.protocol", "fabric.timing", "fabric.endpoints",
         "fabric.drain")),
    (8, ("fabric.ports",)),
    (8, ("fabric.intermediary",)),
    (9, ("fabric.runtime",)),
    (10, ("fabric.stateful",)),
    (11, ("fabric.tasks",)),
    (12, ("fabric.cluster",)),
    (13, ("fabric.butterfly",)),
    (14, ("fabric.cli", "fabric.__main__")),
]
PACKAGE_ROOTS = ("fabric", "nameservice")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for root in PACKAGE_ROOTS for p in (ROOT / root).rglob("*.py")}


def layer_of(module: str) -> tuple[int, int]:
    """``(rank, group index)`` of the group whose unit is the longest prefix of ``module``."""
    best: tuple[int, int, int] | None = None
    for index, (rank, units) in enumerate(LAYERS):
        for unit in units:
            if module == unit or module.startswith(unit + "."):
                if best is None or len(unit) > best[0]:
                    best = (len(unit), rank, index)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")
    return best[1], best[2]


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported name really loads; None for the bare package roots,
    whose ``__init__`` loads nothing (their public names are imported on first use)."""
    if name in modules and name not in PACKAGE_ROOTS:
        return name
    package, _, attr = name.rpartition(".")
    if package == "fabric":
        return fabric._EXPORTS.get(attr)  # the module defining a name of the façade
    if package in modules and package not in PACKAGE_ROOTS:
        return package
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import of a project module in ``path``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names = [f"{source}.{alias.name}" for alias in node.names] or [source]
            names = [n if resolve(n, modules) else source for n in names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGE_ROOTS:
                target = resolve(name, modules)
                if target is not None:
                    found.append((node.lineno, target))
    return found


def upward_edges() -> list[str]:
    modules = all_modules()
    bad = []
    for module, path in sorted(modules.items()):
        if module in PACKAGE_ROOTS:
            continue
        rank, group = layer_of(module)
        for line, target in imports_of(module, path, modules):
            target_rank, target_group = layer_of(target)
            if target_group != group and target_rank >= rank:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {target}")
    return bad


def test_no_module_imports_from_its_own_layer_s_peers_or_from_above() -> None:
    assert upward_edges() == []


def test_the_walk_sees_every_module_and_real_edges() -> None:
    modules = all_modules()
    assert len(modules) > 100
    edges = imports_of("fabric.ports.output", modules["fabric.ports.output"], modules)
    assert ("fabric.protocol" in {t for _, t in edges}
            and "fabric.ports.links" in {t for _, t in edges})
    for module in modules:
        if module not in PACKAGE_ROOTS:
            layer_of(module)  # every module has a layer


def test_an_upward_import_is_reported(tmp_path: Path) -> None:
    modules = all_modules()
    fake = tmp_path / "client_mod.py"
    fake.write_text("def f():\n    from nameservice.server.node import Node\n")
    edges = imports_of("nameservice.client.fake", fake, modules)
    assert edges == [(2, "nameservice.server.node")]
    assert layer_of("nameservice.server.node")[0] > layer_of("nameservice.client.fake")[0]


def loaded_after(statement: str) -> list[str]:
    code = (f"import sys\n{statement}\n"
            "print('\\n'.join(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('fabric', 'nameservice'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return out.stdout.split()


def test_the_client_loads_no_server_storage_or_data_path_module() -> None:
    loaded = loaded_after("import nameservice.client as c\n"
                          "for name in c.__all__:\n    getattr(c, name)")
    assert "nameservice.client.api" in loaded
    assert [m for m in loaded if m.startswith(("nameservice.server", "nameservice.storage",
                                               "fabric"))] == []


def test_importing_fabric_loads_nothing_until_a_name_is_used() -> None:
    assert loaded_after("import fabric") == ["fabric", "fabric._version", "nameservice",
                                             "nameservice.lazy"]
    loaded = loaded_after("from fabric import OutputPort")
    assert "fabric.ports.output" in loaded
    assert [m for m in loaded if m.startswith(("fabric.intermediary", "fabric.runtime",
                                               "fabric.cli", "nameservice.server"))] == []
