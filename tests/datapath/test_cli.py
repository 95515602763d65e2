"""`fabric intermediary`: errors are one line on stderr and a non-zero exit; SIGTERM drains."""
from __future__ import annotations

import asyncio
import socket

from click.testing import CliRunner

from fabric.cli.main import main
from nameservice.control import control_request
from tests.datapath.conftest import events_from


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
    # Besides the log's warning that it runs without keys (insecure mode), one line.
    lines = [line for line in result.output.strip().splitlines() if "INSECURE MODE" not in line]
    assert lines == [f"fabric intermediary: cannot listen on 127.0.0.1:{port}: "
                     f"Address already in use (addr='tcp://127.0.0.1:{port}')"]


def test_the_intermediary_drains_on_sigterm_and_reports_it(cluster):
    proc, _ = cluster.intermediary("--name", "relay-7")
    status = asyncio.run(control_request(proc.control, "status", 10))
    assert status["name"] == "relay-7" and status["draining"] is False
    out = cluster.stop(proc)
    [report] = events_from(out, "drained")
    assert report["complete"] and report["kind"] == "intermediary"
