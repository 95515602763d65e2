"""A ready-made set of key directories that trust each other: for a local cluster, a demo and
tests (a real deployment hands the public keys around itself, docs/security.md)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from nameservice.security.keys import generate

__all__ = ["make_keyring"]


def make_keyring(base: str | os.PathLike[str], nodes: dict[str, str],
                 others: list[str]) -> dict[str, Path]:
    """Make a key directory ``base/NAME`` for every name-service node (name -> ``HOST:PORT``)
    and every other process name, each trusting all the others' public keys. Name -> dir."""
    root = Path(base)
    dirs: dict[str, Path] = {}
    for name, address in [*nodes.items(), *((name, None) for name in others)]:
        dirs[name] = root / name
        generate(dirs[name], name, address)
    for name, directory in dirs.items():
        trusted = directory / "trusted"
        trusted.mkdir(mode=0o700, exist_ok=True)
        for other, other_dir in dirs.items():
            if other != name:
                shutil.copyfile(other_dir / f"{other}.key", trusted / f"{other}.key")
    return dirs
