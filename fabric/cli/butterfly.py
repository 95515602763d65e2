"""``fabric butterfly``: run the failover demo and print its report (or ``--json``).

Exit codes: 0 the scenario ran and nothing was lost or duplicated; 1 something was lost or
duplicated, or the scenario could not be run (the reason is one line on stderr); 130
interrupted (every process it started is stopped).
"""
from __future__ import annotations

import sys

import click

from fabric.cli.common import EXIT_FAILED, EXIT_USAGE, FabricCommand, fail, settings


@click.command("butterfly", cls=FabricCommand)
@click.option("--messages", type=click.IntRange(min=100), default=100_000, show_default=True,
              help="Messages to send in total (over two producers).")
@click.option("--duration", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="Seconds the producers take to send them (sets the rate).")
@click.option("--rate", type=click.FloatRange(min=0), default=0.0,
              help="Messages per second per producer (overrides --duration).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Draw delivered messages per intermediary over time to this PNG.")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Keep the logs and record files here [default: a new temporary directory].")
@click.option("--secure", is_flag=True, default=False,
              help="CURVE on every socket: each process gets a key pair of its own (made in "
                   "the work directory), all trusting each other; the report adds what each "
                   "process's status said of its security.")
def butterfly(messages: int, duration: float, rate: float, plot_path: str | None,
              work_dir: str | None, secure: bool, as_json: bool) -> None:
    """Run the butterfly failover demo: 3 name-service nodes, 2 intermediaries, 2 producers,
    2 consumers; kill an intermediary, move it, drain the other, kill the name-service leader,
    drain everything; then report what was sent, delivered, lost and duplicated, and whether
    it ran with CURVE (--json: one object on stdout; the progress goes to stderr)."""
    import json
    from pathlib import Path

    from fabric.butterfly.progress import Progress
    from fabric.butterfly.scenario import Options, Scenario, ScenarioError

    if plot_path:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            fail("--plot needs matplotlib: pip install 'zmq-fabric[plot]'", EXIT_USAGE)
    found = settings()
    options = Options(messages=messages, rate=rate, duration=duration,
                      work_dir=Path(work_dir) if work_dir else None,
                      log_level=found.log_level, log_format=found.log_format, secure=secure)
    progress = Progress(messages, sys.stderr)
    try:
        outcome = Scenario(options, progress).run()
    except (ScenarioError, TimeoutError) as exc:
        progress.close()
        fail(str(exc), EXIT_FAILED)
    finally:
        progress.close()
    result = outcome.result
    if plot_path:
        from fabric.butterfly.plot import draw

        draw(outcome, plot_path)
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print_report(result, outcome.work_dir, plot_path, outcome.stalls)
    if result["lost"] or result["duplicates"]:
        sys.exit(EXIT_FAILED)


def _print_report(result: dict, work_dir: str, plot_path: str | None, stalls: int) -> None:
    ok = not result["lost"] and not result["duplicates"]
    click.echo("")
    click.echo("butterfly report")
    click.echo(f"  sent         {result['sent']:>12,}")
    click.echo(f"  delivered    {result['delivered']:>12,}")
    click.echo(f"  lost         {result['lost']:>12,}")
    click.echo(f"  duplicates   {result['duplicates']:>12,}")
    click.echo(f"  redelivered  {result['redelivered']:>12,}   (flagged; consumers may see "
               "these twice)")
    click.echo(f"  failover     {result['failover_ms']:>12} ms (longest delivery pause after "
               "the kill)")
    click.echo(f"  re-resolve   {result['reresolve_ms']:>12} ms (registering -> in use by "
               "every port)")
    click.echo(f"  drain        {result['drain_ms']:>12} ms (intermediary b)")
    click.echo(f"  throughput   {result['throughput_msgs_s']:>12,} msgs/s")
    click.echo(f"  secure       {'yes' if result['secure'] else 'no':>12}" + _security_note(result))
    click.echo(f"  logs         {work_dir}")
    if plot_path:
        click.echo(f"  plot         {plot_path}")
    if stalls:
        click.echo(f"  note         processes logged {stalls} times that the host froze them "
                   "(see the logs); a whole-host stall longer than the heartbeat timeout can "
                   "make a message arrive twice")
    click.echo("  " + ("OK: nothing lost, nothing duplicated" if ok
                      else "FAILED: messages were lost or duplicated"))


def _security_note(result: dict) -> str:
    """After ``secure``: how many processes ran with CURVE and what their ZAP handlers did."""
    found = result.get("security")
    if not result["secure"]:
        return "   (insecure mode; --secure for CURVE on every socket)"
    if not found:
        return ""
    return (f"   (CURVE in {found['curve']} of {len(found['processes'])} processes; "
            f"handshakes {found['zap_allowed']:,} allowed, {found['refused']:,} refused)")
