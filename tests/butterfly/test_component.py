"""The component runtime's exit codes: a function that returns is drained and exits 0; one
that raises exits 1 and says why."""
from __future__ import annotations

import pytest

from tests.butterfly.conftest import wait_for

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
