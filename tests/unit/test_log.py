"""Unit tests of pgpool.log: log_line_prefix escapes, level filtering, DETAIL/HINT lines, output format."""

import os
import re
import time

import pytest

from pgpool import log
from pgpool.config import parse_config_text


@pytest.fixture
def out():
    """Configure logging into a pipe; yields a function returning what was written so far."""
    r, w = os.pipe()
    os.set_blocking(r, False)

    def setup(conf=""):
        log.configure(parse_config_text(conf, "t.conf"), fd=w)
        log.set_process("main")
        log.clear_session()

    def read():
        try:
            return os.read(r, 65536).decode()
        except BlockingIOError:
            return ""

    read.setup = setup
    setup()
    yield read
    os.close(r)
    os.close(w)
    log.configure(parse_config_text("", "t.conf"), fd=2)


def test_default_format(out):
    log.log("LOG", "hello")
    line = out()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}: main pid %d: LOG:  hello\n" % os.getpid(), line)


@pytest.mark.parametrize("prefix,expected", [
    ("%a|", "child|"), ("%P|", "CHILD|"), ("%p|", f"{os.getpid()}|"), ("%u@%d|", "[No Connection]@[No Connection]|"),
    ("%%|", "%|"), ("%x%h%r|", "|"), ("[%-7P]", "[CHILD  ]"), ("[%7a]", "[  child]"), ("%", ""), ("abc%-", "abc"),
])
def test_prefix_escapes(out, prefix, expected):
    out.setup(f"log_line_prefix = '{prefix}'")
    log.set_process("child")
    log.log("LOG", "m")
    assert out() == f"{expected}LOG:  m\n"


def test_session_fields(out):
    out.setup("log_line_prefix = '%a %u %d: '")
    log.set_process("child")
    log.set_session(user="alice", database="db1", application_name="psql", client_host="10.0.0.1", client_port=5000)
    log.log("LOG", "x")
    log.set_session(user="bob", database="", application_name="")
    log.log("LOG", "y")
    log.clear_session()
    log.log("LOG", "z")
    assert out() == ("psql alice db1: LOG:  x\nchild bob [unknown]: LOG:  y\n"
                     "child [No Connection] [No Connection]: LOG:  z\n")


def test_time_escapes(out):
    out.setup("log_line_prefix = '%t|%m|'")
    log.log("LOG", "m")
    t, m, _ = out().split("|", 2)
    assert time.strptime(t, "%Y-%m-%d %H:%M:%S") and re.fullmatch(r"\S+ \S+\.\d{3}", m) and m.startswith(t)


def test_detail_hint_and_line_numbers(out):
    out.setup("log_line_prefix = '%l: '")
    log.log("ERROR", "bad\nthing", detail="d1", hint="h1")
    log.warning("w")
    text = out()
    n = int(text.split(":")[0])      # the counter runs for the whole process
    assert text == f"{n}: ERROR:  bad\n\tthing\n{n + 1}: DETAIL:  d1\n{n + 2}: HINT:  h1\n{n + 3}: WARNING:  w\n"


def test_terse_drops_detail(out):
    out.setup("log_line_prefix = ''\nlog_error_verbosity = terse")
    log.error("e", detail="d", hint="h")
    assert out() == "ERROR:  e\n"


@pytest.mark.parametrize("min_level,written", [
    ("warning", ["LOG", "WARNING", "ERROR", "FATAL", "PANIC"]),
    ("debug1", ["DEBUG1", "LOG", "INFO", "NOTICE", "WARNING", "ERROR", "FATAL", "PANIC"]),
    ("debug5", ["DEBUG5", "DEBUG4", "DEBUG3", "DEBUG2", "DEBUG1", "LOG", "INFO", "NOTICE", "WARNING", "ERROR",
                "FATAL", "PANIC"]),
    ("error", ["LOG", "ERROR", "FATAL", "PANIC"]),
    ("log", ["LOG", "FATAL", "PANIC"]),
    ("fatal", ["FATAL", "PANIC"]),
    ("debug", ["DEBUG2", "DEBUG1", "LOG", "INFO", "NOTICE", "WARNING", "ERROR", "FATAL", "PANIC"]),
])
def test_log_min_messages(out, min_level, written):
    out.setup(f"log_line_prefix = ''\nlog_min_messages = {min_level}")
    for level in log.LEVELS:
        log.log(level, level)
    got = [line.split(":  ")[1] for line in out().splitlines()]
    assert sorted(got) == sorted(written)
    assert all(log.enabled(level) == (level in written) for level in log.LEVELS)


def test_debug_levels_print_as_debug(out):
    out.setup("log_line_prefix = ''\nlog_min_messages = debug5")
    log.debug("a", level="DEBUG4")
    log.debug("b")
    assert out() == "DEBUG:  a\nDEBUG:  b\n"


def test_set_min_level_for_session(out):
    out.setup("log_line_prefix = ''")
    log.info("hidden")
    log.set_min_level("info")
    log.info("shown")
    assert out() == "INFO:  shown\n"


def test_filtered_call_is_cheap(out):
    out.setup("log_min_messages = warning")
    start = time.perf_counter()
    for _ in range(100000):
        log.debug("never written")
    assert time.perf_counter() - start < 0.5
    assert out() == ""


def test_line_counter_restarts_in_forked_child(out):
    out.setup("log_line_prefix = '%l '")
    log.log("LOG", "parent")
    pid = os.fork()
    if pid == 0:
        log.log("LOG", "child")
        os._exit(0)
    os.waitpid(pid, 0)
    parent, child = out().splitlines()
    assert parent.endswith(" LOG:  parent") and child == "1 LOG:  child"
