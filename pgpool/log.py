"""Server logging as pgpool-II 4.3 writes it: log_line_prefix escapes, log_min_messages, `LEVEL:  message` lines.

One line per message, then DETAIL / HINT lines (each with the prefix) unless log_error_verbosity is terse;
newlines inside a text are followed by a tab.  Written with a single os.write so lines of concurrent processes
do not interleave.  A filtered-out call costs one set lookup (`enabled(level)` is the same check).

log_line_prefix escapes (pgpool-II 4.3): %a application name (the client's once a session sets one, else the
process type name: main, child, pcp_main, health_check0, ...), %P process name (MAIN, CHILD, ...), %p pid,
%t time, %m time with milliseconds, %d database, %u user, %l line number in this process, %% a percent sign;
an optional width (%-10a) pads.  Unknown escapes print nothing, as in pgpool.
"""

from __future__ import annotations

import os
import sys
import time

LEVELS = {"DEBUG5": 10, "DEBUG4": 11, "DEBUG3": 12, "DEBUG2": 13, "DEBUG1": 14, "LOG": 15, "INFO": 17,
          "NOTICE": 18, "WARNING": 19, "ERROR": 20, "FATAL": 21, "PANIC": 22}
_LOG, _ERROR, _FATAL = LEVELS["LOG"], LEVELS["ERROR"], LEVELS["FATAL"]
_VERBOSITY = {"terse": 0, "default": 1, "verbose": 2}
# %P names of the process types (pgpool's process_name()); others print "".
PROCESS_NAMES = {"main": "MAIN", "child": "CHILD", "sr_check_worker": "WORKER", "pcp_main": "PCP CHILD",
                 "pcp_child": "PCP WORKER", "heart_beat_sender": "WD HB SENDER",
                 "heart_beat_receiver": "WD HB RECEIVER", "watchdog": "WATCHDOG", "life_check": "LIFECHECK",
                 "watchdog_utility": "WD UTILITY", "follow_child": "UTILITY"}
# syslog priorities per level (pgpool's send_message_to_server_log)
_SYSLOG_PRIORITY = {10: 7, 11: 7, 12: 7, 13: 7, 14: 7, 15: 6, 17: 6, 18: 5, 19: 5, 20: 4, 21: 3, 22: 2}


def level_output(level: int, min_level: int) -> bool:
    """pgpool's is_log_level_output: LOG sorts between ERROR and FATAL for the server log."""
    if level == _LOG:
        return min_level == _LOG or min_level <= _ERROR
    if min_level == _LOG:
        return level >= _FATAL
    return level >= min_level


# ---------------------------------------------------------------------------------------------------------
# log_line_prefix

def _app_name() -> str:
    return _state.application_name or _state.process or "[unknown]"


def _session_field(name: str):
    def get() -> str:
        if _state.user is None and _state.database is None:
            return "[No Connection]"
        return getattr(_state, name) or "[unknown]"
    return get


def _timestamp(with_ms: bool):
    def get() -> str:
        now = time.time()
        text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        return f"{text}.{int(now * 1000) % 1000:03d}" if with_ms else text
    return get


_ESCAPES = {
    "a": _app_name,
    "P": lambda: PROCESS_NAMES.get(_state.process, ""),
    "p": lambda: str(_state.pid),
    "l": lambda: str(_state.line_number),
    "t": _timestamp(False),
    "m": _timestamp(True),
    "u": _session_field("user"),
    "d": _session_field("database"),
}


def _compile_prefix(fmt: str) -> list:
    """log_line_prefix as a list of literal strings and (getter, padding) pairs."""
    parts: list = []
    i, n = 0, len(fmt)
    literal = ""
    while i < n:
        c = fmt[i]
        i += 1
        if c != "%":
            literal += c
            continue
        if i >= n:
            break
        if fmt[i] == "%":
            literal += "%"
            i += 1
            continue
        j = i + (fmt[i] == "-")
        while j < n and fmt[j].isdigit():
            j += 1
        if j >= n:
            break                      # format error: ends inside the padding
        padding = int(fmt[i:j]) if j > i + (fmt[i] == "-") else 0
        if literal:
            parts.append(literal)
            literal = ""
        getter = _ESCAPES.get(fmt[j])
        if getter is not None:
            parts.append((getter, padding))
        i = j + 1
    if literal:
        parts.append(literal)
    return parts


class _State:
    """Per-process logging state (module singleton)."""

    def __init__(self) -> None:
        self.enabled: frozenset[str] = frozenset(n for n, c in LEVELS.items() if level_output(c, LEVELS["WARNING"]))
        self.prefix: list = _compile_prefix("%m: %a pid %p: ")
        self.verbosity = 1
        self.fd = 2
        self.to_stderr = True
        self.syslog = None
        self.process = "main"
        self.pid = os.getpid()
        self.line_number = 0
        self.user = self.database = self.application_name = None
        self.client: tuple = (None, None)


_state = _State()


def _reset_after_fork() -> None:
    _state.pid = os.getpid()
    _state.line_number = 0


os.register_at_fork(after_in_child=_reset_after_fork)


def _prefix() -> str:
    out = []
    for part in _state.prefix:
        if isinstance(part, str):
            out.append(part)
            continue
        getter, padding = part
        text = getter()
        if padding > 0:
            text = text.rjust(padding)
        elif padding < 0:
            text = text.ljust(-padding)
        out.append(text)
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------
# Public API

def configure(cfg, *, fd: int | None = None) -> None:
    """Apply log_line_prefix, log_min_messages, log_error_verbosity, log_destination, syslog_* from a Config."""
    set_min_level(cfg.log_min_messages)
    _state.prefix = _compile_prefix(cfg.log_line_prefix)
    _state.verbosity = _VERBOSITY[cfg.log_error_verbosity]
    destinations = {d.strip() for d in cfg.log_destination.split(",")}
    _state.to_stderr = "stderr" in destinations or not destinations - {""}
    if fd is not None:
        _state.fd = fd
    if "syslog" in destinations:
        import syslog
        syslog.openlog(cfg.syslog_ident, syslog.LOG_PID, getattr(syslog, "LOG_" + cfg.syslog_facility.upper()))
        _state.syslog = syslog
    else:
        _state.syslog = None


def set_min_level(level: str) -> None:
    """Change log_min_messages for this process only (PGPOOL SET log_min_messages)."""
    code = LEVELS[level.upper()] if level.lower() != "debug" else LEVELS["DEBUG2"]
    _state.enabled = frozenset(n for n, c in LEVELS.items() if level_output(c, code))


def set_process(name: str) -> None:
    """Process type for %a / %P: main, child, pcp_main, pcp_child, sr_check_worker, health_check<N>, ..."""
    _state.process = name
    _state.pid = os.getpid()


def set_session(user: str | None = None, database: str | None = None, application_name: str | None = None,
                client_host: str | None = None, client_port: str | int | None = None) -> None:
    """Client session attributes for %u %d %a (client_host/client_port are kept for callers; 4.3 has no %h/%r)."""
    _state.user = user or ""
    _state.database = database or ""
    _state.application_name = application_name or None
    _state.client = (client_host, client_port)


def clear_session() -> None:
    """Back to the process's own identity (%a = process type, %u/%d = [No Connection])."""
    _state.user = _state.database = _state.application_name = None


def enabled(level: str) -> bool:
    """True if a message of this level would be written (cheap: a set lookup)."""
    return level in _state.enabled


def format_message(level: str, message: str, detail: str | None = None, hint: str | None = None) -> str:
    """The text pgpool writes for one message (prefix on every line)."""
    severity = "DEBUG" if level.startswith("DEBUG") else level
    lines = [(severity, message)]
    if _state.verbosity >= 1:
        lines += [(label, text) for label, text in (("DETAIL", detail), ("HINT", hint)) if text]
    out = []
    for label, text in lines:
        _state.line_number += 1          # pgpool counts every prefixed line
        out.append(f"{_prefix()}{label}:  {text.replace(chr(10), chr(10) + chr(9))}\n")
    return "".join(out)


def log(level: str, message: str, detail: str | None = None, hint: str | None = None) -> None:
    """Write message at level (DEBUG5..DEBUG1, LOG, INFO, NOTICE, WARNING, ERROR, FATAL, PANIC) if enabled."""
    if level not in _state.enabled:
        return
    text = format_message(level, message, detail, hint)
    if _state.syslog is not None:
        for line in text.splitlines():
            _state.syslog.syslog(_SYSLOG_PRIORITY[LEVELS[level]], line)
    if _state.to_stderr:
        data = text.encode("utf-8", "backslashreplace")
        try:
            while data:
                data = data[os.write(_state.fd, data):]
        except OSError:
            sys.stderr.write(text)


def debug(message: str, detail: str | None = None, hint: str | None = None, level: str = "DEBUG1") -> None:
    if level in _state.enabled:
        log(level, message, detail, hint)


def info(message: str, detail: str | None = None, hint: str | None = None) -> None:
    log("INFO", message, detail, hint)


def notice(message: str, detail: str | None = None, hint: str | None = None) -> None:
    log("NOTICE", message, detail, hint)


def warning(message: str, detail: str | None = None, hint: str | None = None) -> None:
    log("WARNING", message, detail, hint)


def error(message: str, detail: str | None = None, hint: str | None = None) -> None:
    log("ERROR", message, detail, hint)


def fatal(message: str, detail: str | None = None, hint: str | None = None) -> None:
    log("FATAL", message, detail, hint)
