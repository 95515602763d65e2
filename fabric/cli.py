"""The ``fabric`` command line. Each command group lives in its own module and is added here."""
from __future__ import annotations

import click

from fabric import __version__


@click.group()
@click.version_option(__version__, prog_name="fabric")
def main() -> None:
    """fabric: a broker-less messaging fabric on ZeroMQ."""
