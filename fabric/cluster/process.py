"""``fabric agent`` as a process: the agent, and the manager candidate beside it.

It serves a control socket registered as ``process/agent-HOST`` (``fabric status`` shows the
agent's instances and whether its manager acts); SIGTERM, SIGINT or ``fabric drain
agent-HOST`` drain every instance it runs and deregister it. Events: ``control`` at start,
``agent`` (``host``) once registered, ``stopped`` at the end.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from fabric.cluster.agent import Agent
from fabric.cluster.manager import Manager
from fabric.runtime.service import serve_process
from nameservice.logs import event

__all__ = ["run_agent"]

log = logging.getLogger(__name__)


async def run_agent(names: Any, agent: Agent, *, manage: bool, control: str) -> int:
    """Run ``agent`` (and a manager candidate when ``manage``) until asked to stop; the exit
    code."""
    manager = Manager(agent.client, agent.host, ttl=agent.ttl) if manage else None

    async def run(stop: asyncio.Event) -> None:
        if manager is None:
            await agent.run(stop)
            return
        await asyncio.gather(agent.run(stop), manager.run(stop))

    async def started() -> None:
        await agent.registered.wait()
        event(log, "agent", host=agent.host)

    def status() -> dict[str, Any]:
        return {**agent.status(),
                "manager": manager.status() if manager is not None else None}

    return await serve_process(names, f"agent-{agent.host}", "agent", status, run, started,
                               agent.drain_timeout, control)
