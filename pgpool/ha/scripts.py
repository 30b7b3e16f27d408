"""Run failover / failback / follow primary commands with /bin/sh -c, as pgpool-II's system() does, but without blocking.

`spawn` starts a command (by default in a process group of its own, so that shutdown can stop it
with everything it started) and returns its pid; the parent reaps it from its main loop.  `run`
waits for it (used by the follow_child process, which may block).  The command's stdout and
stderr are pgpool's own, as with system().  A non-zero exit is logged and nothing else happens:
pgpool-II ignores the exit status of these commands.
"""

from __future__ import annotations

import os
import signal

from pgpool import log

SHELL = "/bin/sh"
# dispositions a command must not inherit from the process that starts it (ignored signals
# survive exec; handled ones are reset by exec anyway)
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                    signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)


def spawn(command: str, own_group: bool = True) -> int:
    """Start `/bin/sh -c command`; its pid (the process group id too when `own_group`)."""
    kwargs = {"setpgroup": 0} if own_group else {}
    return os.posix_spawn(SHELL, ["sh", "-c", command], os.environ, setsigdef=_DEFAULT_SIGNALS,
                          setsigmask=(), **kwargs)


def wait(pid: int) -> int:
    """Wait for `pid`; its exit code (-N when killed by signal N)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        except InterruptedError:
            continue


def run(command: str, own_group: bool = True) -> int:
    """Run `command` to its end; its exit code."""
    return wait(spawn(command, own_group))


def outcome(code: int) -> str:
    return f"was terminated by signal {-code}" if code < 0 else f"exited with status {code}"


def report(what: str, command: str, code: int) -> None:
    """Log a command's failure (pgpool-II goes on whatever the exit status)."""
    if code != 0:
        log.log("WARNING", f"{what} {outcome(code)}", detail=f"command: {command}",
                hint="pgpool goes on whatever the exit status; the command's own output is above")


def kill_group(pgid: int, sig: int) -> None:
    """Send `sig` to the process group `pgid` (a command started with own_group and its children)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
