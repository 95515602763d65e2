"""The conventions every ``fabric`` command follows (docs/operations.md, "Command-line
conventions"): exit codes, one-line errors, the options a command takes on itself or on the
group, the logging setup, Ctrl-C.

* ``--ns``, ``--keys``, ``--json``, ``--log-level`` and ``--log-format`` may be given once on
  the group (``fabric --ns X kv get k``) or on the command (``fabric kv get k --ns X``; the
  command's wins). Every option also reads ``FABRIC_<OPTION>`` for the group's options and
  ``FABRIC_<COMMAND>_<OPTION>`` for a command's own (click's ``auto_envvar_prefix``):
  ``FABRIC_NS``, ``FABRIC_JSON=1``, ``FABRIC_LOG_LEVEL=debug``, ``FABRIC_KV_GET_TIMEOUT=2``.
* Errors are one line on stderr, prefixed once by the command (``fabric kv get: ...``).
* Ctrl-C ends any command with exit code 130, after the same clean stop as SIGTERM.

Only click is imported here: each command imports what it uses when it runs.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import click
from click.core import ParameterSource

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CAS_FAILED, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGINT): 128 + 2, as shells report a process ended by it."""

LEVELS = ("debug", "info", "warning", "error", "critical")  # nameservice.logs.LEVELS
FORMATS = ("text", "json")  # nameservice.logs.FORMATS
_SETTINGS = "fabric.settings"  # where a command's resolved settings live in ctx.meta
_GLOBALS = ("ns", "keys", "as_json", "log_level", "log_format")


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Exit with ``code`` after one line on stderr: ``COMMAND: message``."""
    ctx = click.get_current_context(silent=True)
    click.echo(f"{ctx.command_path if ctx is not None else 'fabric'}: {message}", err=True)
    sys.exit(code)


@dataclass(frozen=True)
class Settings:
    """A command's resolved group-or-command options."""

    ns: str | None = None
    keys: str | None = None
    json: bool = False
    log_level: str = "info"
    log_format: str = "text"
    events: bool = False


def settings() -> Settings:
    """The settings of the command running now (defaults outside a command)."""
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if _SETTINGS in ctx.meta:
            return ctx.meta[_SETTINGS]
        ctx = ctx.parent
    return Settings()


def _global_options(root: bool, ns: bool, json: bool, keys: bool) -> list[click.Option]:
    """``--ns``, ``--keys``, ``--json``, ``--log-level``, ``--log-format``: on the group with
    their ``FABRIC_*`` variables and defaults; on a command, unset unless given there."""
    where = "" if root else " (or on the group: fabric --OPTION ...)"
    common: dict[str, Any] = {"allow_from_autoenv": root, "show_envvar": root}
    options = []
    if ns:
        options.append(click.Option(
            ["--ns", "ns"], metavar="HOST:PORT,...", **common,
            help="Name-service nodes [default: the nodes of cluster $FABRIC_NS_CLUSTER, or "
                 "'default', found with zeroconf]" + where + "."))
    if keys:
        options.append(click.Option(
            ["--keys", "keys"], metavar="DIR", **common,
            help="This process's key pair and the keys it trusts (docs/security.md): CURVE "
                 "on every socket [default: none, insecure mode]" + where + "."))
    if json:
        options.append(click.Option(
            ["--json", "as_json"], is_flag=True, default=False, **common,
            envvar="FABRIC_JSON" if root else None,
            help="Print JSON on stdout: one object, or one per line for a stream" + where
                 + "."))
    options.append(click.Option(
        ["--log-level"], type=click.Choice(LEVELS, case_sensitive=False),
        default="info" if root else None, show_default=root, **common,
        help="Log records at this level and above go to stderr" + where + "."))
    options.append(click.Option(
        ["--log-format"], type=click.Choice(FORMATS), default="text" if root else None,
        show_default=root, **common,
        help="Logs as text lines or as JSON objects, one per line" + where + "."))
    return options


def events_option() -> click.Option:
    """``--events``, for commands that run a process: its events as JSON lines on stdout."""
    return click.Option(
        ["--events"], is_flag=True, default=False,
        help="Write this process's events (listening, registered, drained, ...) on stdout as "
             "JSON lines: {\"event\": KIND, \"time\": ..., ...} (--json means the same here).")


metrics_option = click.option(
    "--metrics", default=None, metavar="HOST:PORT", envvar="FABRIC_METRICS", show_envvar=True,
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any; the address is "
         "logged) [default: none].")
"""``--metrics``, for the commands that run a long-lived process."""


class FabricCommand(click.Command):
    """A command with the group-or-command options; ``ns=True`` adds ``--ns``, ``events=True``
    adds ``--events`` (a process's events on stdout), ``json=False`` leaves out ``--json``.
    When it runs, its callback gets ``ns`` and ``as_json`` resolved (command, else group, else
    environment), and logging is set up (:func:`nameservice.logs.setup`)."""

    def __init__(self, *args: Any, ns: bool = False, json: bool = True, events: bool = False,
                 keys: bool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._takes = {"ns": ns, "as_json": json}
        self._keys = ns if keys is None else keys
        self.has_events = events
        self.params.extend(_global_options(False, ns, json, self._keys))
        if events:
            self.params.append(events_option())

    def invoke(self, ctx: click.Context) -> Any:
        found = resolve(ctx)
        for name, takes in self._takes.items():
            if takes:
                ctx.params[name] = getattr(found, "json" if name == "as_json" else name)
        from nameservice import logs

        logs.setup(found.log_level, found.log_format, events=found.events)
        import os

        if "FABRIC_FENCE_FD" in os.environ:  # started by an agent: fenced by its lease
            from fabric.cluster.fence import guard_from_environment

            guard_from_environment()
        if self._keys:
            from nameservice.errors import ConfigError
            from nameservice.security.context import configure

            try:
                configure(found.keys or None)
            except ConfigError as exc:
                fail(f"--keys: {exc}", EXIT_USAGE)
        return super().invoke(ctx)


def resolve(ctx: click.Context) -> Settings:
    """Merge the command's group-or-command options (taken out of ``ctx.params``) with the
    group's, keep the result in ``ctx.meta`` and return it."""
    root = ctx.find_root()
    values: dict[str, Any] = {}
    for name in _GLOBALS:
        mine = ctx.params.pop(name, None)
        given_here = ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE,
                                                        ParameterSource.ENVIRONMENT)
        values[name] = mine if given_here or root is ctx else root.params.get(name)
    events = bool(ctx.params.pop("events", False))
    command = ctx.command
    found = Settings(
        ns=values["ns"], keys=values["keys"], json=bool(values["as_json"]),
        log_level=(values["log_level"] or "info").lower(),
        log_format=values["log_format"] or "text",
        events=events or (bool(values["as_json"]) and getattr(command, "has_events", False)))
    ctx.meta[_SETTINGS] = found
    return found


class FabricGroup(click.Group):
    """The ``fabric`` group: takes the group-or-command options, reads ``FABRIC_*``
    variables, and turns every failure into one line and an exit code (usage 2, Ctrl-C 130)
    instead of a usage screen or a traceback.

    ``lazy``: command name -> ``"module:attribute"``, imported only when that command runs
    (or a help screen or a completion lists it): ``fabric kv get`` loads no other command's
    module."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        self.lazy = dict(lazy or {})
        context_settings = dict(kwargs.pop("context_settings", None) or {})
        context_settings.setdefault("auto_envvar_prefix", "FABRIC")
        context_settings.setdefault("help_option_names", ["-h", "--help"])
        context_settings.setdefault("max_content_width", 100)
        super().__init__(*args, context_settings=context_settings, **kwargs)
        self.params.extend(_global_options(True, True, True, True))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            import importlib

            module, _, attribute = self.lazy[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if not kwargs.get("standalone_mode", True):
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.Abort:  # what click makes of KeyboardInterrupt and EOFError
            sys.exit(EXIT_INTERRUPTED)
        except KeyboardInterrupt:
            sys.exit(EXIT_INTERRUPTED)
        except click.ClickException as exc:
            failed_in: click.Context | None = getattr(exc, "ctx", None)
            no_args = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click 8.2 and later
            if isinstance(exc, no_args) and failed_in is not None:
                click.echo(failed_in.get_help())  # a group given no command: its help, as 8.1
                sys.exit(EXIT_OK)
            where = failed_in.command_path if failed_in is not None else "fabric"
            message = exc.format_message().rstrip().rstrip(".")
            if isinstance(exc, click.UsageError) and failed_in is not None:
                message += f" (see '{where} --help')"
            click.echo(f"{where}: {message}", err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:
            # The reader went away (``fabric kv range | head``): stop quietly, and keep the
            # interpreter's final flush of stdout from failing again.
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else EXIT_OK)
