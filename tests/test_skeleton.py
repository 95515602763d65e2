"""The installed package exposes the ``fabric`` command."""
from click.testing import CliRunner

from fabric.cli.main import main


def test_version_option_prints_the_package_version():
    from fabric import __version__

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output
