"""`fabric intermediary`: errors are one line on stderr and a non-zero exit."""
from __future__ import annotations

import socket

from click.testing import CliRunner

from fabric.cli import main


def test_a_malformed_listen_address_is_a_usage_error():
    result = CliRunner().invoke(main, ["intermediary", "--channel", "c", "--listen", "nowhere"])
    assert result.exit_code == 2
    assert "expected HOST:PORT" in result.output


def test_a_port_in_use_is_one_clear_line_and_exit_1():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = CliRunner().invoke(main, ["intermediary", "--channel", "c",
                                           "--listen", f"127.0.0.1:{port}"])
    finally:
        taken.close()
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == [f"fabric intermediary: cannot listen on 127.0.0.1:{port}: "
                     f"Address already in use (addr='tcp://127.0.0.1:{port}')"]
