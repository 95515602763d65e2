"""The one logging setup (nameservice/logs.py): text and JSON records on stderr, events as JSON
lines on stdout whatever the level, and nothing printed by a library nobody set up."""
from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys

import pytest

from nameservice import logs

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def clean_root():
    """The root logger as it was, whatever a test set up."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logs._streaming = False  # noqa: SLF001 - undo what setup(events=True) turned on


def run(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env)


def test_json_records_are_one_object_per_line_with_time_level_logger_message_and_extras():
    done = run("import logging\n"
               "from nameservice import logs\n"
               "logs.setup('debug', 'json')\n"
               "log = logging.getLogger('a.b')\n"
               "log.debug('seen %d', 3, extra={'peer': 'x'})\n"
               "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('boom')\n")
    first, second = (json.loads(line) for line in done.stderr.splitlines())
    assert ISO_UTC.match(first["time"]), first
    assert {k: first[k] for k in ("level", "logger", "message", "peer")} == {
        "level": "debug", "logger": "a.b", "message": "seen 3", "peer": "x"}
    assert second["level"] == "error" and "ZeroDivisionError" in second["exception"]
    assert done.stdout == ""


def test_text_records_are_time_level_logger_and_message_below_the_level_nothing():
    done = run("import logging\n"
               "from nameservice import logs\n"
               "logs.setup('warning')\n"
               "logging.getLogger('x').info('hidden')\n"
               "logging.getLogger('x').warning('shown')\n")
    [line] = done.stderr.splitlines()
    time, level, rest = line.split(" ", 2)
    assert ISO_UTC.match(time) and level == "WARNING" and rest == "x: shown"


def test_events_go_to_stdout_as_json_lines_whatever_the_level(clean_root, capsys):
    out = io.StringIO()
    logs.setup("error", "text", events=True, events_stream=out)
    logs.event(logging.getLogger("svc"), "listening", endpoint="tcp://127.0.0.1:5")
    logging.getLogger("svc").info("not an event")
    assert capsys.readouterr().err == ""  # INFO is below the level: no record on stderr
    [line] = out.getvalue().splitlines()
    found = json.loads(line)
    assert found["event"] == "listening" and found["endpoint"] == "tcp://127.0.0.1:5"
    assert ISO_UTC.match(found["time"])


def test_an_event_is_a_log_record_too():
    done = run("import logging\n"
               "from nameservice import logs\n"
               "logs.setup('info', 'json')\n"
               "logs.event(logging.getLogger('svc'), 'registered', name='a', at=1.5)\n")
    assert done.stdout == ""  # no events stream asked for
    record = json.loads(done.stderr)
    assert record["event"] == "registered" and record["data"] == {"name": "a", "at": 1.5}
    assert record["message"] == 'registered {"name": "a", "at": 1.5}'


def test_a_library_nobody_set_up_prints_no_event():
    done = run("import logging\n"
               "from nameservice import logs\n"
               "logs.event(logging.getLogger('svc'), 'listening', endpoint='x')\n")
    assert done.stdout == "" and done.stderr == ""


def test_a_second_setup_replaces_the_first_and_leaves_other_handlers_alone(clean_root):
    other = logging.NullHandler()
    clean_root.addHandler(other)
    logs.setup("info")
    logs.setup("debug", "json", events=True, events_stream=io.StringIO())
    ours = [h for h in clean_root.handlers if getattr(h, logs._MARK, False)]  # noqa: SLF001
    assert len(ours) == 2 and other in clean_root.handlers
    assert clean_root.level == logging.DEBUG


def test_event_fields_may_not_hide_the_kind_or_the_time():
    with pytest.raises(ValueError):
        logs.event(logging.getLogger("x"), "a", time=1)


def test_unknown_levels_and_formats_are_refused():
    with pytest.raises(ValueError):
        logs.setup("loud")
    with pytest.raises(ValueError):
        logs.setup("info", "xml")
