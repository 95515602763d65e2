"""The command-line conventions every ``fabric`` command follows (docs/operations.md,
"Command-line conventions"): options on the group or the command, FABRIC_* variables, --json
that parses, values shown safely, one-prefix errors, Ctrl-C exits 130, the version, JSON logs,
events, shell completion, and the command tree in the docs, generated from the commands."""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import click
import pytest

from nameservice.client import SyncNameServiceClient
from nameservice.server.local import LocalCluster
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

FABRIC = str(Path(sys.executable).with_name("fabric"))
ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "operations.md"
TREE_BEGIN = "<!-- fabric --help tree (generated) -->"
TREE_END = "<!-- end of the fabric --help tree -->"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def env(**extra: str) -> dict[str, str]:
    """The environment without any FABRIC_* variable, plus ``extra``; browsing finds no
    cluster (a name nobody advertises)."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    out["FABRIC_NS_CLUSTER"] = f"nobody-{uuid.uuid4().hex[:8]}"
    return {**out, **extra}


def fabric(*args: str, timeout: float = 60, **variables: str) -> subprocess.CompletedProcess:
    return subprocess.run([FABRIC, *args], capture_output=True, env=env(**variables),
                          timeout=timeout)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, (done.args, done.returncode, done.stderr.decode())
    return done.stdout.decode()


def as_json(done: subprocess.CompletedProcess) -> object:
    return json.loads(ok(done))


@pytest.fixture(scope="module")
def ns(tmp_path_factory) -> str:
    """A one-node name service that has elected itself; its ``--ns`` value."""
    cluster = LocalCluster(tmp_path_factory.mktemp("conventions"), 1)
    try:
        cluster.start()
        wait_for(lambda: fabric("kv", "put", "conv/ready", "1", "--ns", cluster.ns_arg,
                                "--timeout", "1").returncode == 0, 30, "a leader")
        yield cluster.ns_arg
    finally:
        cluster.close()


# ------------------------------------------------------------------- options and variables


def test_the_group_options_work_on_the_group_or_the_command_and_the_command_wins(ns):
    ok(fabric("--ns", ns, "kv", "put", "conv/a", "1"))
    assert ok(fabric("kv", "get", "conv/a", "--ns", ns)) == "1\n"
    assert ok(fabric("--ns", ns, "kv", "get", "conv/a")) == "1\n"
    assert json.loads(ok(fabric("--json", "kv", "get", "conv/a", "--ns", ns)))["value"] == "1"
    assert ok(fabric("--ns", "127.0.0.1:1", "kv", "get", "conv/a", "--ns", ns)) == "1\n"
    assert fabric("--ns", ns, "kv", "get", "conv/a", "--ns", "nohost").returncode == 2


def test_every_option_reads_its_fabric_variable_and_the_command_line_wins(ns):
    assert ok(fabric("kv", "get", "conv/ready", FABRIC_NS=ns)) == "1\n"
    assert as_json(fabric("kv", "get", "conv/ready", FABRIC_NS=ns,
                          FABRIC_JSON="1"))["value"] == "1"
    # A command's own option: FABRIC_<COMMAND>_<OPTION>.
    listed = ok(fabric("kv", "get", "conv/rea", FABRIC_NS=ns, FABRIC_KV_GET_PREFIX="true"))
    assert listed == "conv/ready 1\n"
    assert ok(fabric("kv", "get", "conv/ready", "--ns", ns, FABRIC_NS="127.0.0.1:1")) == "1\n"
    logged = fabric("kv", "get", "conv/none", FABRIC_NS=ns, FABRIC_LOG_FORMAT="json",
                    FABRIC_LOG_LEVEL="debug")
    assert logged.returncode == 4
    *records, error = logged.stderr.decode().splitlines()
    assert error.startswith("fabric kv get: ")
    assert all(json.loads(line)["level"] for line in records)


# ------------------------------------------------------------------------ --json output


def test_every_kv_and_lease_command_prints_json_that_parses(ns):
    put = as_json(fabric("kv", "put", "conv/j/a", "x", "--json", "--ns", ns))
    assert put["revision"] > 0 and put["lease"] == 0 and put["replicated"] is True
    got = as_json(fabric("kv", "get", "conv/j/a", "--json", "--ns", ns))
    assert got["key"] == "conv/j/a" and got["value"] == "x" and got["mod_revision"] == \
        put["revision"]
    cas = as_json(fabric("kv", "cas", "conv/j/a", "--old", "x", "--new", "y", "--json",
                         "--ns", ns))
    assert cas["succeeded"] and cas["current"]["value"] == "y"
    failed = fabric("kv", "cas", "conv/j/a", "--old", "x", "--new", "z", "--json", "--ns", ns)
    assert failed.returncode == 3
    assert json.loads(failed.stdout) == {**json.loads(failed.stdout), "succeeded": False}
    assert json.loads(failed.stdout)["current"]["value"] == "y"
    listed = as_json(fabric("kv", "range", "conv/j/", "--json", "--ns", ns))
    assert [kv["key"] for kv in listed] == ["conv/j/a"]
    assert as_json(fabric("kv", "get", "conv/j/", "--prefix", "--json", "--ns", ns)) == listed
    deleted = as_json(fabric("kv", "del", "conv/j/a", "--json", "--ns", ns))
    assert deleted["deleted"] == 1 and deleted["revision"] > cas["revision"]

    lease = as_json(fabric("lease", "grant", "30", "--json", "--ns", ns))
    assert lease["id"] > 0 and lease["ttl"] == 30
    renewed = as_json(fabric("lease", "keepalive", str(lease["id"]), "--once", "--json",
                             "--ns", ns))
    assert renewed == {"id": lease["id"], "ttl": 30}
    assert as_json(fabric("lease", "revoke", str(lease["id"]), "--json", "--ns", ns)) == {
        "id": lease["id"], "revoked": True}


def test_status_version_and_ns_status_print_json_that_parses(ns):
    rows = as_json(fabric("ns", "status", "--json", "--ns", ns))
    assert [row["role"] for row in rows] == ["leader"]
    status = as_json(fabric("status", "--json", "--ns", ns))
    assert [row["name"] for row in status["processes"]] == ["ns-1"]
    assert status["channels"] == {}
    gone = fabric("drain", "nobody-here", "--json", "--ns", ns)
    assert gone.returncode == 4 and gone.stdout == b""


def test_version_names_the_package_and_every_wire_format():
    from fabric import __version__
    from fabric.protocol import VERSION as DATA_PATH
    from nameservice.kv.codec import FORMAT_VERSION
    from nameservice.wire import VERSION as WIRE

    text = ok(fabric("version"))
    assert text.splitlines()[0] == f"fabric {__version__}"
    assert ok(fabric("--version")) == text
    found = as_json(fabric("version", "--json"))
    assert found == {**found, "fabric": __version__, "data_path_protocol": DATA_PATH,
                     "nameservice_wire": WIRE, "kv_format": FORMAT_VERSION}
    assert as_json(fabric("--version", FABRIC_JSON="1")) == found


# ------------------------------------------------------------------------------ values


def test_binary_values_print_as_base64_and_registry_entries_decoded(ns):
    import msgpack

    raw = bytes(range(256))
    entry = {"endpoint": "tcp://10.0.0.5:9000", "meta": {"name": "relay-1"}}
    with SyncNameServiceClient(ns) as client:
        client.put("conv/v/bin", raw)
        client.put("conv/v/text", "héllo wörld")
        client.put("names/channel/conv/abc123", msgpack.packb(entry, use_bin_type=True))
        client.put(b"conv/v/\xff", "odd key")
    assert ok(fabric("kv", "get", "conv/v/bin", "--ns", ns)) == \
        "base64:" + base64.b64encode(raw).decode() + "\n"
    got = as_json(fabric("kv", "get", "conv/v/bin", "--json", "--ns", ns))
    assert "value" not in got and base64.b64decode(got["value_base64"]) == raw
    assert ok(fabric("kv", "get", "conv/v/text", "--ns", ns)) == "héllo wörld\n"
    listed = {kv.get("key") or kv["key_base64"]: kv
              for kv in as_json(fabric("kv", "range", "conv/v/", "--json", "--ns", ns))}
    assert listed["conv/v/text"]["value"] == "héllo wörld"
    assert listed[base64.b64encode(b"conv/v/\xff").decode()]["value"] == "odd key"
    registry = as_json(fabric("kv", "get", "names/channel/conv/abc123", "--json", "--ns", ns))
    assert registry["entry"] == entry
    line = ok(fabric("kv", "range", "names/channel/conv/", "--ns", ns))
    key, value = line.rstrip("\n").split(" ", 1)
    assert key == "names/channel/conv/abc123" and json.loads(value) == entry


def test_put_with_a_lease_and_del_and_get_of_a_prefix(ns):
    lease = as_json(fabric("lease", "grant", "60", "--json", "--ns", ns))["id"]
    ok(fabric("kv", "put", "conv/p/1", "a", "--lease", str(lease), "--ns", ns))
    ok(fabric("kv", "put", "conv/p/2", "b", "--ns", ns))
    ok(fabric("kv", "put", "conv/q", "c", "--ns", ns))
    assert as_json(fabric("kv", "get", "conv/p/1", "--json", "--ns", ns))["lease"] == lease
    assert ok(fabric("kv", "get", "conv/p/", "--prefix", "--ns", ns)) == "conv/p/1 a\nconv/p/2 b\n"
    removed = fabric("kv", "del", "conv/p/", "--prefix", "--ns", ns)
    assert removed.returncode == 0 and removed.stderr.decode().startswith("deleted 2")
    assert ok(fabric("kv", "get", "conv/p/", "--prefix", "--ns", ns)) == ""
    assert ok(fabric("kv", "get", "conv/q", "--ns", ns)) == "c\n"
    assert fabric("kv", "del", "conv/p/", "--prefix", "--ns", ns).returncode == 4
    missing = fabric("kv", "put", "conv/p/3", "x", "--lease", "999999", "--ns", ns)
    assert missing.returncode == 4 and len(missing.stderr.splitlines()) == 1


def test_the_client_deletes_every_key_under_a_prefix_and_nothing_else(ns):
    with SyncNameServiceClient(ns) as client:
        for key in ("conv/d/a", "conv/d/b/c", "conv/dd"):
            client.put(key, "1")
        result = client.delete_prefix("conv/d/")
        assert result.deleted == 2 and result.revision > 0
        assert [kv.key for kv in client.range("conv/d")] == [b"conv/dd"]
        assert client.delete_prefix("conv/d/").deleted == 0


# -------------------------------------------------------------------- errors and signals


@pytest.mark.parametrize("args, code, prefix", [
    (["kv", "get"], 2, "fabric kv get: Missing argument 'KEY'"),
    (["kv", "get", "k", "--ns", "nohost"], 2, "fabric kv get: bad address"),
    (["kv", "put", "k", "v", "--ttl", "1", "--lease", "2", "--ns", "127.0.0.1:1"], 2,
     "fabric kv put: "),
    (["kv", "del", "", "--prefix", "--ns", "127.0.0.1:1"], 2, "fabric kv del: "),
    (["kv", "get", "k", "--ns", "127.0.0.1:1", "--timeout", "0.2"], 1,
     "fabric kv get: name service unavailable"),
    (["--log-level", "loud", "version"], 2, "fabric: Invalid value for '--log-level'"),
    (["nosuchcommand"], 2, "fabric: No such command"),
    (["lease", "revoke", "0"], 2, "fabric lease revoke: "),
    (["ns", "start", "--id", "4", "--cluster", "1=127.0.0.1:5"], 2, "fabric ns start: "),
    (["intermediary", "--channel", "c", "--listen", "nowhere"], 2, "fabric intermediary: "),
    (["intermediary", "--channel", "c", "--metrics", "nowhere"], 2, "fabric intermediary: "),
    (["component", "run", "x:y", "--metrics", "a:b:c", "--ns", "127.0.0.1:1"], 2,
     "fabric component run: "),
    (["ns", "start", "--id", "1", "--cluster", "1=127.0.0.1:5", "--metrics", "nowhere"], 2,
     "fabric ns start: "),
    (["drain", "x", "--ns", "127.0.0.1:1", "--timeout", "0.2"], 1, "fabric drain: "),
])
def test_an_error_is_one_line_prefixed_once_by_the_command(args, code, prefix):
    done = fabric(*args)
    err = done.stderr.decode()
    assert done.returncode == code, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(prefix), err
    assert "fabric: fabric" not in err


@pytest.mark.parametrize("args", [[], ["kv"], ["ns"], ["lease"], ["component"]])
def test_a_group_given_no_command_prints_its_help(args):
    text = ok(fabric(*args))
    assert text.startswith(f"Usage: {' '.join(['fabric', *args])} ")


def test_python_m_nameservice_server_errors_are_one_line_too():
    done = subprocess.run([sys.executable, "-m", "nameservice.server", "--id", "1"],
                          capture_output=True, env=env(), timeout=60)
    assert done.returncode == 2
    [line] = done.stderr.decode().splitlines()
    assert line.startswith("python -m nameservice.server: give --cluster ID=HOST:PORT")


def test_ctrl_c_ends_a_watch_with_130_and_sigterm_with_0(ns):
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 0)):
        watch = subprocess.Popen([FABRIC, "kv", "watch", "conv/w/", "--json", "--ns", ns],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
        try:
            # The watch prints what happens after it started: put until one arrives.
            wait_for(lambda w=watch: ok(fabric("kv", "put", "conv/w/k", "v", "--ns", ns)) == ""
                     and _readable(w), 30, "the watch's first event")
            event = json.loads(watch.stdout.readline())
            assert event["type"] == "put" and event["key"] == "conv/w/k" and \
                event["value"] == "v"
            watch.send_signal(sig)
            _, err = watch.communicate(timeout=30)
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.communicate()
        assert watch.returncode == code, err
        assert b"Traceback" not in err and err.strip() == b""


def _readable(proc: subprocess.Popen) -> bool:
    import select

    return bool(select.select([proc.stdout], [], [], 0.2)[0])


def test_a_process_logs_json_lines_and_writes_its_events_and_ctrl_c_exits_130(ns, tmp_path):
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [FABRIC, "--log-format", "json", "intermediary", "--channel", "conv", "--name",
             "conv-relay", "--events", "--ns", ns],
            stdout=subprocess.PIPE, stderr=err, env=env())
    try:
        kinds = []
        while "registered" not in kinds:
            line = proc.stdout.readline()
            assert line, err_path.read_text()
            event = json.loads(line)
            assert ISO_UTC.match(event["time"])
            kinds.append(event["event"])
        assert kinds == ["listening", "control", "registered"]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err_path.read_text()
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["stats", "drained"]
    records = [json.loads(line) for line in err_path.read_text().splitlines()]
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert [r["event"] for r in records if "event" in r][:3] == ["listening", "control",
                                                                  "registered"]


def test_ns_local_writes_its_events_and_hands_the_log_options_to_its_nodes(tmp_path):
    proc = subprocess.Popen([FABRIC, "--log-format", "json", "ns", "local", "--nodes", "1",
                             "--base-port", "0", "--no-advertise", "--data-dir",
                             str(tmp_path), "--events"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready" and ready["nodes"] == {"1": ready["ns"]}
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    node_log = (tmp_path / "node-1.log").read_text().splitlines()
    assert node_log and all(json.loads(line)["logger"] for line in node_log)


# ----------------------------------------------------------------------- completion, help


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_shell_completion_script_generates(shell):
    done = subprocess.run([FABRIC], capture_output=True, timeout=60,
                          env=env(_FABRIC_COMPLETE=f"{shell}_source"))
    assert done.returncode == 0
    assert "_FABRIC_COMPLETE" in done.stdout.decode()


def test_completion_completes_commands_and_options():
    done = subprocess.run([FABRIC], capture_output=True, timeout=60, env=env(
        _FABRIC_COMPLETE="bash_complete", COMP_WORDS="fabric kv g", COMP_CWORD="2"))
    assert done.stdout.decode().split() == ["plain,get"]
    done = subprocess.run([FABRIC], capture_output=True, timeout=60, env=env(
        _FABRIC_COMPLETE="bash_complete", COMP_WORDS="fabric kv get k --pre", COMP_CWORD="4"))
    assert done.stdout.decode().split() == ["plain,--prefix"]


def test_kv_get_loads_no_other_command_nor_the_data_path_nor_the_raft_messages():
    code = ("import sys\nfrom fabric.cli.main import main\n"
            "try:\n    main(['kv', 'get', 'k', '--ns', '127.0.0.1:1', '--timeout', '0.05'])\n"
            "except SystemExit:\n    pass\n"
            "print('\\n'.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env(), timeout=60)
    loaded = set(done.stdout.split())
    assert "nameservice.client.api" in loaded and "fabric.cli.kv" in loaded
    unwanted = ("fabric.cli.ns", "fabric.cli.ops", "fabric.cli.component", "fabric.cli.butterfly",
                "fabric.cli.intermediary", "fabric.ports", "fabric.intermediary",
                "fabric.runtime", "nameservice.raft", "nameservice.server",
                "nameservice.storage", "nameservice.kv.machine", "zeroconf")
    assert [m for m in loaded
            if m in unwanted or m.startswith(tuple(f"{u}." for u in unwanted))] == []


def test_ns_start_and_python_m_nameservice_server_take_the_same_node_options():
    from fabric.cli.main import main
    from nameservice.server.cli import node_command

    # On both, worded for each: fabric's are its group-or-command options.
    logs = {"log_level", "log_format", "events", "keys"}

    def options(command: click.Command) -> dict[str, tuple]:
        return {p.name: (tuple(p.opts), p.default, repr(p.type), p.required,
                         getattr(p, "is_flag", False), getattr(p, "help", None))
                for p in command.params if p.name not in {"as_json", *logs}}

    ctx = click.Context(main)
    ns = main.get_command(ctx, "ns")
    start = ns.get_command(click.Context(ns, parent=ctx), "start")
    assert options(start) == options(node_command)
    assert {"snapshot_threshold", "sync_mode", "history_events"} <= set(options(node_command))
    for command in (start, node_command):
        assert logs <= {p.name for p in command.params}


def test_the_intermediary_s_default_drain_timeout_is_the_data_path_s():
    from fabric.cli.intermediary import DEFAULT_DRAIN_TIMEOUT
    from fabric.drain import DEFAULT_TIMEOUT

    assert DEFAULT_DRAIN_TIMEOUT == DEFAULT_TIMEOUT


def help_tree() -> str:
    """Every command, its arguments and options, and its short help, as an indented tree."""
    from fabric.cli.main import main

    lines: list[str] = []
    hidden = {"help", "log_level", "log_format"}

    def option(p: click.Option) -> str:
        name = max(p.opts, key=len)
        if p.is_flag:
            text = name
        elif isinstance(p.type, click.Choice):
            text = f"{name} {'|'.join(p.type.choices)}"
        else:
            text = f"{name} {p.metavar or p.name.upper()}"
        return text if p.required else f"[{text}]"

    def walk(command: click.Command, path: str, depth: int, parent: click.Context | None):
        ctx = click.Context(command, info_name=path.split()[-1], parent=parent)
        params = [p for p in command.params if p.name not in hidden]
        arguments = [p.metavar or p.name.upper() if p.required else
                     f"[{p.metavar or p.name.upper()}]"
                     for p in params if isinstance(p, click.Argument)]
        group = isinstance(command, click.Group)
        head = "  " * depth + " ".join([path, *arguments, *(["COMMAND"] if group else [])])
        lines.append(head)
        pad = "  " * depth + "    "
        lines.append(pad + command.get_short_help_str(limit=96 - len(pad)))
        line = ""
        for flag in (option(p) for p in params if isinstance(p, click.Option)):
            if line and len(pad) + len(line) + 1 + len(flag) > 96:
                lines.append(pad + line)
                line = ""
            line = f"{line} {flag}" if line else flag
        if line:
            lines.append(pad + line)
        if group:
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), f"{path} {name}", depth + 1, ctx)

    walk(main, "fabric", 0, None)
    return "\n".join(lines)


def test_the_command_tree_in_the_docs_is_the_real_one():
    docs = DOCS.read_text()
    begin, end = docs.index(TREE_BEGIN) + len(TREE_BEGIN), docs.index(TREE_END)
    tree = f"\n```text\n{help_tree()}\n```\n"
    if os.environ.get("FABRIC_REWRITE_DOCS"):
        DOCS.write_text(docs[:begin] + tree + docs[end:])
        return
    assert docs[begin:end] == tree, ("docs/operations.md's command tree is not the real one: "
                                     "FABRIC_REWRITE_DOCS=1 rewrites it")
