"""The component runtime's exit codes: a function that returns is drained and exits 0; one
that raises exits 1 and says why; one stopped by Ctrl-C drains and exits 130."""
from __future__ import annotations

import signal

import pytest

from tests.waiting import wait_for

pytestmark = pytest.mark.slow

FUNCTIONS = '''
async def finishes(ctx):
    out = await ctx.output(ctx.params["channel"])
    for i in range(100):
        await out.send(i)

async def fails(ctx):
    raise RuntimeError("the handler's database is gone")
'''


def test_a_function_that_returns_is_drained_and_exits_0(deployment, tmp_path):
    d = deployment
    (tmp_path / "funcs.py").write_text(FUNCTIONS)
    d.intermediary("int-c")
    consumer, _ = d.consumer("cons-c")
    proc = d.fleet.start("finishes", d.fabric(
        "component", "run", f"{tmp_path / 'funcs.py'}:finishes", "--name", "finishes",
        "--ns", d.ns, "--param", f"channel={d.channel}", "--events"))
    assert proc.wait(30) == 0, proc.log_tail()
    report = proc.latest("drained")
    assert report["complete"] and report["left_messages"] == 0
    assert report["reports"][0]["kind"] == "producer"
    # Drained means acknowledged: the consumer has handled all of it.
    wait_for(lambda: d.progress(consumer)["unique"] == 100, 10, "the 100 messages")


def test_a_function_that_raises_exits_1_and_says_why(deployment, tmp_path):
    d = deployment
    (tmp_path / "funcs.py").write_text(FUNCTIONS)
    proc = d.fleet.start("fails", d.fabric(
        "component", "run", f"{tmp_path / 'funcs.py'}:fails", "--name", "fails", "--ns", d.ns))
    assert proc.wait(30) == 1
    assert "the handler's database is gone" in proc.log_path.read_text()


def test_a_component_stopped_by_ctrl_c_drains_and_exits_130(deployment):
    d = deployment
    d.intermediary("int-i")
    d.consumer("cons-i")  # acknowledges: the drain completes
    proc = d.component("interrupted", "fabric.butterfly.producer:main", index=2, rate=500)
    proc.wait_event("control", 30)
    wait_for(lambda: proc.events("connected"), 30, "the producer's connection")
    proc.signal(signal.SIGINT)
    assert proc.wait(30) == 130, proc.log_tail()
    assert proc.latest("drained")["complete"]
    assert proc.latest("sent") is not None  # the function saw stopping set and returned
