"""``python -m fabric``: the ``fabric`` command."""
from fabric.cli import main

main()
