"""Small durable-file primitives: write-all, atomic replace, directory fsync, locking."""
from __future__ import annotations

import fcntl
import os

from .errors import StorageLockedError

TEMP_SUFFIX = ".tmp"


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(dir_fd: int) -> None:
    """Make renames, creations and deletions in the directory durable."""
    os.fsync(dir_fd)


def write_atomic(dir_path: str, dir_fd: int, name: str, data: bytes) -> int:
    """Replace ``dir_path/name`` with ``data`` so that a crash leaves the old or the new file.

    Writes ``name.tmp``, fsyncs it, renames it over ``name`` and fsyncs the directory.
    Returns the number of fsyncs done (2).
    """
    path = os.path.join(dir_path, name)
    temp = path + TEMP_SUFFIX
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    fsync_dir(dir_fd)
    return 2


def read_file(path: str) -> bytes | None:
    """The whole content of ``path``, or None if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def lock_directory(dir_path: str) -> int:
    """Take an exclusive lock on ``dir_path/LOCK``; StorageLockedError if someone holds it.

    The lock is released when the returned descriptor is closed (or the process dies).
    """
    fd = os.open(os.path.join(dir_path, "LOCK"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StorageLockedError(f"{dir_path} is in use by another process") from None
    return fd
