"""``python -m fabric``: the ``fabric`` command."""
from fabric.cli.main import main

main(prog_name="fabric")
