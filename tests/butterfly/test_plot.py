"""The demo's plot is a PNG (skipped where matplotlib is not installed)."""
from __future__ import annotations

import pytest

from fabric.butterfly.scenario import Outcome


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from fabric.butterfly.plot import draw

    outcome = Outcome(result={}, events=[(101.0, "(a) SIGKILL intermediary a"),
                                         (102.0, "intermediaries up")],
                      timeline={"tcp://127.0.0.1:1": [5, 5, 0], "tcp://127.0.0.1:2": [0, 5, 9]},
                      intermediaries={"tcp://127.0.0.1:1": "intermediary-a"}, start=100.0)
    path = tmp_path / "run.png"
    draw(outcome, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
