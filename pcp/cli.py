"""The pcp_* command-line tools of pgpool-II 4.3: one table-driven program dispatched on basename(argv[0]).

Options, help texts, messages and output are those of pgpool-II 4.3.5's pcp_frontend_client.
Deliberate difference: when the server answers a command with ERROR/FATAL (or the exchange
fails) after a successful login, the message is the same but the exit status is 1, not 0.

Run as ``pcp_node_info ...`` (console scripts) or ``python -m pcp.cli pcp_node_info ...``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import astuple, dataclass, field
from typing import Callable, TextIO

from pcp import protocol as p
from pcp.client import ArrayResult, PCPConnection, PCPConnectError, PCPError

MAX_NUM_BACKENDS = 128
PASSWORD_MAX = 100

COMMON_HELP = [
    "  -U, --username=NAME    username for PCP authentication",
    "  -h, --host=HOSTNAME    pgpool-II host",
    "  -p, --port=PORT        PCP port number",
    "  -w, --no-password      never prompt for password",
    "  -W, --password         force password prompt (should happen automatically)",
]
TAIL_HELP = [
    "  -d, --debug            enable debug message (optional)",
    "  -v, --verbose          output verbose messages",
    "  -?, --help             print this help",
]
NODE_ID_HELP = ["  -n, --node-id=NODEID   ID of a backend node"]
SCOPE_HELP = [
    '  -s, --scope=SCOPE      SCOPE can be "cluster", or "local"',
    "                         cluster scope do operations on all Pgpool-II nodes",
    "                         part of the watchdog cluster",
]
GRACEFUL_HELP = ["  -g, --gracefully       promote gracefully (optional)"]

# (name, takes an argument, value) in getopt_long's table order (ambiguity lists follow it).
LONG_OPTIONS = [
    ("help", False, "?"), ("debug", False, "d"), ("version", False, "V"), ("host", True, "h"),
    ("port", True, "p"), ("process-id", True, "P"), ("username", True, "U"), ("no-password", False, "w"),
    ("password", False, "W"), ("mode", True, "m"), ("scope", True, "s"), ("gracefully", False, "g"),
    ("switchover", False, "s"), ("verbose", False, "v"), ("all", False, "a"), ("node-id", True, "n"),
    ("watchdog-id", True, "n"),
]


@dataclass
class Options:
    """What the command line asked for (after pgpool-II's own defaults)."""
    host: str | None = None
    port: int = p.DEFAULT_PORT
    user: str | None = None
    node_id: int = -1
    process_id: int = 0
    mode: str = "s"
    scope: str = "l"
    all: bool = False
    debug: bool = False
    need_password: bool = True
    gracefully: bool = False
    switchover: bool = False
    verbose: bool = False


class Exit(Exception):
    """Stop with ``code`` after writing ``stderr`` (pgpool-II's exit(N) paths)."""

    def __init__(self, code: int, stderr: str = ""):
        super().__init__(stderr)
        self.code, self.stderr = code, stderr


# ---- output formatting (pure) ---------------------------------------------------------------

def format_titles(titles: list[str], values: list[str]) -> str:
    """pgpool-II's -v layout: "%-Ns : value" per title (N = longest title), then a blank line."""
    width = max(len(t) for t in titles)
    return "".join(f"{t:<{width}} : {v}\n" for t, v in zip(titles, values)) + "\n"


STATUS_NAMES = {0: "unused", 1: "waiting", 2: "up", 3: "down"}
ROLE_NAMES = {0: "main", 1: "replica", 2: "primary", 3: "standby"}


def status_name(node: p.NodeInfo) -> str:
    if node.status == 3 and node.quarantine:
        return "quarantine"
    return STATUS_NAMES.get(node.status, "unknown")


def local_time(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


NODE_INFO_TITLES = ["Hostname", "Port", "Status", "Weight", "Status Name", "Backend Status Name", "Role",
                    "Backend Role", "Replication Delay", "Replication State", "Replication Sync State",
                    "Last Status Change"]


def node_info_values(node: p.NodeInfo) -> list[str]:
    return [node.hostname, str(node.port), str(node.status), f"{node.weight / p.RAND_MAX:f}", status_name(node),
            node.pg_status, ROLE_NAMES.get(node.role, "unknown"), node.pg_role, str(node.standby_delay % 2**64),
            node.replication_state or "none", node.replication_sync_state or "none",
            local_time(node.status_changed_time)]


def format_node_count(count: int, opts: Options) -> str:
    return f"Node Count\n____________\n {count}\n" if opts.verbose else f"{count}\n"


def _slot_items(result: ArrayResult) -> list:
    """The records libpcp's output loops visit: slot by slot until the first empty one."""
    return result.items[:result.slots]


def format_node_info(result: ArrayResult, opts: Options) -> str:
    out = []
    for node in _slot_items(result):
        if not opts.all and not node.hostname:
            continue
        values = node_info_values(node)
        out.append(format_titles(NODE_INFO_TITLES, values) if opts.verbose else " ".join(values) + "\n")
    return "".join(out) if out else "No node information available\n\n"


HEALTH_TITLES = ["Node Id", "Host Name", "Port", "Status", "Role", "Last Status Change", "Total Count",
                 "Success Count", "Fail Count", "Skip Count", "Retry Count", "Average Retry Count",
                 "Max Retry Count", "Max Health Check Duration", "Minimum Health Check Duration",
                 "Average Health Check Duration", "Last Health Check", "Last Successful Health Check",
                 "Last Skip Health Check", "Last Failed Health Check"]


def format_health_check_stats(stats: p.HealthCheckStats, opts: Options) -> str:
    values = list(astuple(stats))
    return format_titles(HEALTH_TITLES, values) if opts.verbose else " ".join(values) + "\n"


def format_pool_status(result: ArrayResult, opts: Options) -> str:
    out = []
    for i in range(result.slots):
        item = result.items[i] if i < len(result.items) else None
        if opts.verbose:
            name, value, desc = (item.name, item.value, item.desc) if item else ("NULL", "NULL", "NULL")
            out.append(f"Name [{i:3d}]:\t{name}\nValue:      \t{value}\nDescription:\t{desc}\n\n")
        elif item is None:
            out.append(f"****Data at {i} slot is NULL\n")
        else:
            out.append(f"name : {item.name}\nvalue: {item.value}\ndesc : {item.desc}\n\n")
    return "".join(out)


def format_process_count(pids: list[int], opts: Options) -> str:
    if opts.verbose:
        rows = "".join(f"{i} \t | \t {pid}\n" for i, pid in enumerate(pids))
        return f"No \t | \t PID\n_____________________\n{rows}\nTotal Processes:{len(pids)}\n"
    return "".join(f"{pid} " for pid in pids) + "\n"


PROC_INFO_TITLES = ["Database", "Username", "Start time", "Client connection count", "Major", "Minor",
                    "Backend connection time", "Client connection time", "Client idle duration",
                    "Client disconnection time", "Pool Counter", "Backend PID", "Connected", "PID",
                    "Backend ID", "Status"]


def proc_info_values(r: p.ProcessInfo) -> list[str]:
    return [r.database, r.username, r.start_time, r.client_connection_count, r.majorversion, r.minorversion,
            r.backend_connection_time, r.client_connection_time, r.client_idle_duration,
            r.client_disconnection_time, r.pool_counter, r.pool_backendpid, r.pool_connected, r.pool_pid,
            r.backend_id, r.status]


def format_process_info(result: ArrayResult, opts: Options) -> str:
    out = []
    for row in _slot_items(result):
        if not opts.all and not row.database:
            continue
        values = proc_info_values(row)
        out.append(format_titles(PROC_INFO_TITLES, values) if opts.verbose else " ".join(values) + "\n")
    return "".join(out) if out else "No process information available\n\n"


QUORUM_NAMES = {0: "QUORUM IS ON THE EDGE", 1: "QUORUM EXIST", -1: "QUORUM ABSENT", -2: "NO LEADER NODE"}


def format_watchdog_info(info: p.WatchdogInfo, opts: Options) -> str:
    yes_no = "YES" if info.escalated else "NO"
    if not opts.verbose:
        head = (f"{info.remote_node_count + 1} {info.member_remote_node_count + 1} {yes_no} "
                f"{info.leader_node_name} {info.leader_host_name}\n\n")
        return head + "".join(
            f"{n.node_name} {n.host_name} {n.pgpool_port} {n.wd_port} {n.state} {n.state_name} "
            f"{n.membership} {n.membership_string}\n" for n in info.nodes)
    out = [
        "Watchdog Cluster Information \n",
        f"Total Nodes              : {info.remote_node_count + 1}\n",
        f"Remote Nodes             : {info.remote_node_count}\n",
        f"Member Remote Nodes      : {info.member_remote_node_count}\n",
        f"Alive Remote Nodes       : {info.alive_node_count}\n",
        f"Nodes required for quorum: {info.nodes_required_for_quorum}\n",
        f"Quorum state             : {QUORUM_NAMES.get(info.quorum_status, 'UNKNOWN')}\n",
        f"Local node escalation    : {yes_no}\n",
        f"Leader Node Name         : {info.leader_node_name}\n",
        f"Leader Host Name         : {info.leader_host_name}\n\n",
        "Watchdog Node Information \n",
    ]
    for n in info.nodes:
        out.append(f"Node Name         : {n.node_name}\nHost Name         : {n.host_name}\n"
                   f"Delegate IP       : {n.delegate_ip}\nPgpool port       : {n.pgpool_port}\n"
                   f"Watchdog port     : {n.wd_port}\nNode priority     : {n.priority}\n"
                   f"Status            : {n.state}\nStatus Name       : {n.state_name}\n"
                   f"Membership Status : {n.membership_string}\n\n")
    return "".join(out)


# ---- the tool table -------------------------------------------------------------------------

def _is_empty(result) -> bool:
    """libpcp's pcp_result_is_empty() for each result type."""
    if result is None:
        return True
    if isinstance(result, ArrayResult):
        return result.is_empty
    if isinstance(result, list):
        return not result
    return False


@dataclass
class Tool:
    name: str
    optstring: str
    description: str
    run: Callable[[PCPConnection, Options], object]
    output: Callable[[object, Options], str] | None = None
    needs_node_id: bool = False       # pgpool-II's app_require_nodeID()
    positional: str = ""              # "" | "node" | "process" | "watchdog"
    scope: bool = False               # -s/--scope (stop, reload)
    extra_help: list[str] = field(default_factory=list)

    def usage(self) -> str:
        arg = "[node-id]" if self.needs_node_id else {"process": "[process-id]", "watchdog": "[watchdog-id]"}.get(
            self.positional, "")
        lines = [f"{self.name} - {self.description}", "Usage:", f"{self.name} [OPTION...] {arg}", "Options:",
                 *COMMON_HELP, *self.extra_help, *TAIL_HELP]
        return "\n".join(lines) + "\n\n"


TOOLS = {t.name: t for t in [
    Tool("pcp_attach_node", "n:h:p:U:wWvd", "attach a node from pgpool-II",
         lambda c, o: c.attach_node(o.node_id), needs_node_id=True, positional="node", extra_help=NODE_ID_HELP),
    Tool("pcp_detach_node", "n:h:p:U:gwWvd", "detach a node from pgpool-II",
         lambda c, o: c.detach_node(o.node_id, o.gracefully), needs_node_id=True, positional="node",
         extra_help=NODE_ID_HELP + GRACEFUL_HELP),
    Tool("pcp_node_count", "h:p:U:wWvd", "display the total number of nodes under pgpool-II's control",
         lambda c, o: c.node_count(), format_node_count),
    Tool("pcp_node_info", "n:h:p:U:awWvd", "display a pgpool-II node's information",
         lambda c, o: c.node_info(o.node_id), format_node_info, positional="node",
         extra_help=NODE_ID_HELP + ["  -a, --all              display all backend nodes information"]),
    Tool("pcp_health_check_stats", "n:h:p:U:wWvd", "display a pgpool-II health check stats data",
         lambda c, o: c.health_check_stats(o.node_id), format_health_check_stats, needs_node_id=True,
         positional="node", extra_help=NODE_ID_HELP),
    Tool("pcp_pool_status", "h:p:U:wWvd", "display pgpool configuration and status",
         lambda c, o: c.pool_status(), format_pool_status),
    Tool("pcp_proc_count", "h:p:U:wWvd", "display the list of pgpool-II child process PIDs",
         lambda c, o: c.process_count(), format_process_count),
    Tool("pcp_proc_info", "h:p:P:U:awWvd", "display a pgpool-II child process' information",
         lambda c, o: c.process_info(o.process_id), format_process_info, positional="process",
         extra_help=["  -P, --process-id=PID   PID of the child process to get information for (optional)",
                     "  -a, --all              display all child processes and their available connection slots"]),
    Tool("pcp_promote_node", "n:h:p:U:gswWvd", "promote a node as new main from pgpool-II",
         lambda c, o: c.promote_node(o.node_id, o.gracefully, o.switchover), needs_node_id=True,
         positional="node", extra_help=NODE_ID_HELP + GRACEFUL_HELP + [
             "  -s, --switchover       switchover primary to specified node (optional)"]),
    Tool("pcp_recovery_node", "n:h:p:U:wWvd", "recover a node",
         lambda c, o: c.recovery_node(o.node_id), needs_node_id=True, positional="node",
         extra_help=NODE_ID_HELP),
    Tool("pcp_stop_pgpool", "m:h:p:U:s:wWvda", "terminate pgpool-II",
         lambda c, o: c.stop_pgpool(o.mode, o.scope), scope=True,
         extra_help=['  -m, --mode=MODE        MODE can be "smart", "fast", or "immediate"'] + SCOPE_HELP),
    Tool("pcp_watchdog_info", "n:h:p:U:wWvd", "display a pgpool-II watchdog's information",
         lambda c, o: c.watchdog_info(o.node_id), format_watchdog_info, positional="watchdog",
         extra_help=["  -n, --watchdog-id=ID   ID of a other pgpool to get information for",
                     "                         ID 0 for the local watchdog",
                     "                         If omitted then get information of all watchdog nodes"]),
    Tool("pcp_reload_config", "h:p:U:s:wWvd", "reload a pgpool-II config file",
         lambda c, o: c.reload_config(o.scope), scope=True, extra_help=SCOPE_HELP),
]}


# ---- GNU getopt_long ------------------------------------------------------------------------

def _short_table(optstring: str) -> dict[str, bool]:
    table, i = {}, 0
    while i < len(optstring):
        takes = optstring[i + 1:i + 2] == ":"
        table[optstring[i]] = takes
        i += 2 if takes else 1
    return table


def getopt_long(argv0: str, args: list[str], optstring: str, errors: list[str]):
    """GNU getopt_long with argument permutation: yields (option char, argument); non-options
    are collected in the returned generator's ``.positional`` via the list passed back at the end.

    Yields ("?", None) after appending glibc's complaint to ``errors``; yields ("", positional
    list) once at the end."""
    shorts = _short_table(optstring)
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional.extend(args[i:])
            break
        if arg.startswith("--"):
            body = arg[2:]
            name, has_value, value = body.partition("=")
            exact = [o for o in LONG_OPTIONS if o[0] == name]
            matches = exact or [o for o in LONG_OPTIONS if o[0].startswith(name)]
            if not matches:
                errors.append(f"{argv0}: unrecognized option '{arg}'\n")
                yield "?", None
                continue
            first = matches[0]
            differing = [o for o in matches[1:] if (o[1], o[2]) != (first[1], first[2])]
            if not exact and differing:
                listed = "".join(f" '--{o[0]}'" for o in [first, *differing])
                errors.append(f"{argv0}: option '{arg}' is ambiguous; possibilities:{listed}\n")
                yield "?", None
                continue
            opt_name, takes, val = first
            if takes:
                if not has_value:
                    if i >= len(args):
                        errors.append(f"{argv0}: option '--{opt_name}' requires an argument\n")
                        yield "?", None
                        continue
                    value = args[i]
                    i += 1
                yield val, value
            elif has_value:
                errors.append(f"{argv0}: option '--{opt_name}' doesn't allow an argument\n")
                yield "?", None
            else:
                yield val, None
            continue
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        j = 1
        while j < len(arg):
            ch = arg[j]
            j += 1
            if ch not in shorts or ch == ":":
                errors.append(f"{argv0}: invalid option -- '{ch}'\n")
                yield "?", None
                continue
            if not shorts[ch]:
                yield ch, None
                continue
            if j < len(arg):
                yield ch, arg[j:]
            elif i < len(args):
                yield ch, args[i]
                i += 1
            else:
                errors.append(f"{argv0}: option requires an argument -- '{ch}'\n")
                yield "?", None
            break
    yield "", positional


# ---- option handling ------------------------------------------------------------------------

def parse_args(tool: Tool, argv0: str, args: list[str]) -> tuple[Options, str]:
    """Options for ``tool`` plus warnings for stderr; raises Exit like pgpool-II's exit() paths."""
    prog = tool.name
    opts = Options()
    errors: list[str] = []
    try_help = f'Try "{prog} --help" for more information.\n\n'
    positional: list[str] = []
    for ch, value in getopt_long(argv0, args, tool.optstring, errors):
        if ch == "":
            positional = value
            break
        if ch == "?" or ch not in OPTION_HANDLERS:
            raise Exit(1, "".join(errors) + try_help)
        OPTION_HANDLERS[ch](tool, opts, value)
    warnings = []
    shown = "(null)"   # pgpool-II prints getopt's optarg here, which is NULL by then
    for arg in positional:
        if tool.positional == "process" and opts.process_id <= 0:
            opts.process_id = p.c_atoi(arg)
            if opts.process_id <= 0:
                raise Exit(0, "".join(warnings) + f'{prog}: Invalid process-id "{shown}", must be greater than 0\n')
        elif tool.positional == "watchdog" and opts.node_id < 0:
            opts.node_id = p.c_atoi(arg)
            if opts.node_id < 0:
                raise Exit(0, "".join(warnings) + f'{prog}: Invalid watchdog-id "{shown}", must be a positive '
                           "number or zero for local watchdog node\n")
        elif tool.positional == "node" and opts.node_id < 0:
            opts.node_id = p.c_atoi(arg)
            if opts.node_id < 0 or opts.node_id > MAX_NUM_BACKENDS:
                raise Exit(0, "".join(warnings) + f'{prog}: Invalid node-id "{shown}", must be between 0 and '
                           f"{MAX_NUM_BACKENDS}\n")
        else:
            warnings.append(f'{prog}: Warning: extra command-line argument "{arg}" ignored\n')
    if opts.node_id < 0 and tool.needs_node_id:
        raise Exit(1, "".join(warnings) + f"{prog}: missing node-id\n" + try_help)
    return opts, "".join(warnings)


def _invalid_argument(tool: Tool, value: str) -> Exit:
    return Exit(1, f'Invalid argument "{value}", Try "{tool.name} --help" for more information.\n')


def _opt_scope(tool: Tool, opts: Options, value: str | None) -> None:
    if tool.scope:
        scopes = {"c": "c", "cluster": "c", "l": "l", "local": "l"}
        if value not in scopes:
            raise Exit(1, f'{tool.name}: Invalid command scope "{value}", must be either "cluster" or "local" \n')
        opts.scope = scopes[value]
    elif tool.name == "pcp_promote_node":
        opts.switchover = True
    else:
        raise _invalid_argument(tool, value)


def _opt_mode(tool: Tool, opts: Options, value: str) -> None:
    if tool.name != "pcp_stop_pgpool":
        raise _invalid_argument(tool, value)
    modes = {"s": "s", "smart": "s", "f": "f", "fast": "f", "i": "i", "immediate": "i"}
    if value not in modes:
        raise Exit(1, f'{tool.name}: Invalid shutdown mode "{value}", must be either "smart" "immediate" or "fast" \n')
    opts.mode = modes[value]


def _opt_node(tool: Tool, opts: Options, value: str) -> None:
    opts.node_id = p.c_atoi(value)
    if tool.name == "pcp_watchdog_info":
        if opts.node_id < 0:
            raise Exit(0, f'{tool.name}: Invalid watchdog-id "{value}", must be a positive number or zero for a '
                       "local watchdog node\n")
    elif opts.node_id < 0 or opts.node_id > MAX_NUM_BACKENDS:
        raise Exit(0, f'{tool.name}: Invalid node-id "{value}", must be between 0 and {MAX_NUM_BACKENDS}\n')


def _opt_port(tool: Tool, opts: Options, value: str) -> None:
    opts.port = p.c_atoi(value)
    if opts.port <= 1024 or opts.port > 65535:
        raise Exit(0, f'{tool.name}: Invalid port number "{value}", must be between 1024 and 65535\n')


def _opt_pid(tool: Tool, opts: Options, value: str) -> None:
    opts.process_id = p.c_atoi(value)
    if opts.process_id <= 0:
        raise Exit(0, f'{tool.name}: Invalid process-id "{value}", must be greater than 0\n')


def _setter(attr: str, value: object):
    def handler(tool: Tool, opts: Options, arg: str | None) -> None:
        setattr(opts, attr, arg if value is None else value)
    return handler


OPTION_HANDLERS: dict[str, Callable[[Tool, Options, str | None], None]] = {
    "d": _setter("debug", True), "a": _setter("all", True), "w": _setter("need_password", False),
    "W": _setter("need_password", True), "g": _setter("gracefully", True), "v": _setter("verbose", True),
    "h": _setter("host", None), "U": _setter("user", None),
    "s": _opt_scope, "m": _opt_mode, "n": _opt_node, "p": _opt_port, "P": _opt_pid,
}


def prompt_password(prompt: str = "Password: ") -> str:
    """simple_prompt() without echo: the terminal if there is one, else stdin with the prompt on stderr."""
    try:
        tty = open("/dev/tty", "r+")
    except OSError:
        tty = None
    if tty is None:
        sys.stderr.write(prompt)
        sys.stderr.flush()
        line = sys.stdin.readline()
        sys.stderr.write("\n")
        return line.rstrip("\n")[:PASSWORD_MAX]
    import termios
    with tty:
        tty.write(prompt)
        tty.flush()
        fd = tty.fileno()
        old = termios.tcgetattr(fd)
        new = list(old)
        new[3] &= ~termios.ECHO
        try:
            termios.tcsetattr(fd, termios.TCSAFLUSH, new)
            line = tty.readline()
        finally:
            termios.tcsetattr(fd, termios.TCSAFLUSH, old)
            tty.write("\n")
            tty.flush()
    return line.rstrip("\n")[:PASSWORD_MAX]


# ---- main -----------------------------------------------------------------------------------

def run(argv: list[str], stdout: TextIO, stderr: TextIO) -> int:
    """One pcp_* invocation: argv[0] names the tool.  Returns the exit status."""
    argv0 = argv[0] if argv else ""
    name = os.path.basename(argv0)
    tool = TOOLS.get(name)
    if tool is None:
        stderr.write(f"{name} is a invalid PCP utility\n")
        return 1
    args = argv[1:]
    if args and args[0] in ("--help", "-?"):
        stderr.write(tool.usage())
        return 0
    if args and args[0] in ("-V", "--version"):
        stderr.write(f"{name} (pgpool-II) 4.3.5\n")
        return 0
    try:
        opts, warnings = parse_args(tool, argv0, args)
    except Exit as exc:
        stderr.write(exc.stderr)
        return exc.code
    stderr.write(warnings)
    password = prompt_password() if opts.need_password else None
    debug = stdout if opts.debug else None
    try:
        conn = PCPConnection.connect(opts.host, opts.port, opts.user, password, debug=debug)
    except PCPConnectError as exc:
        stdout.flush()
        stderr.write(f"{exc.text or 'Unknown Error'}\n")
        return 1
    status = 0
    try:
        result = tool.run(conn, opts)
    except PCPError as exc:
        stdout.flush()
        stderr.write(f"{exc.text or 'Unknown Error'}\n")
        status = 1
    else:
        if tool.output is None or _is_empty(result):
            stdout.write(f"{name} -- Command Successful\n")
        else:
            stdout.write(tool.output(result, opts))
    conn.close()
    stdout.flush()
    return status


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: the tool is basename(sys.argv[0])."""
    code = run(list(sys.argv if argv is None else argv), sys.stdout, sys.stderr)
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    # python -m pcp.cli <tool> [args...]: the tool name (or path) plays argv[0]
    sys.exit(main(sys.argv[1:]))
