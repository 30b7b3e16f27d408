"""The pgpool_setup command: a throw-away pgpool + PostgreSQL installation in the current directory.

Like pgpool-II's pgpool_setup (for tests and experiments, not production): in an empty current
directory it builds PostgreSQL clusters ``data0`` .. ``dataN-1`` (with :mod:`pgpool.tools.cluster`;
run as the ``postgres`` OS user when we are root), ``etc/pgpool.conf``, ``etc/pcp.conf`` (pcp user
``postgres``, password ``postgres``), ``etc/pool_hba.conf``, ``etc/pool_passwd``, the scripts
``startall``, ``shutdownall`` and ``pgpool_reload``, ``pcppass``, ``README.port`` and
``bashrc.ports``; then it starts everything, shows ``SHOW pool_nodes`` and stops it again (unless
``--no-stop``).  Ports: pgpool ``base_port``, PCP ``base_port + 1``, PostgreSQL ``base_port + 2``
onwards (or from ``-pg``).  Standbys are made with pg_basebackup instead of online recovery;
native replication / snapshot isolation / raw nodes are standbys promoted to independent
primaries, so they start with identical contents.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pgpool.auth.md5 import encrypt_password
from pgpool.auth.pool_passwd import update_entry
from pgpool.config.sample import generate as sample_pgpool_conf
from pgpool.tools.cluster import SUPERUSER, CommandError, PgCluster, PgNode, Runner, format_conf, port_is_free

# -m letter: (backend_clustering_mode, the name pgpool_setup prints)
MODES = {
    "s": ("streaming_replication", "streaming replication mode"),
    "r": ("native_replication", "native replication mode"),
    "n": ("raw", "raw mode"),
    "i": ("snapshot_isolation", "snapshot isolation mode"),
}
NOT_SUPPORTED = {
    "-m l": "logical replication mode is not supported by this pgpool_setup",
    "-m y": "slony mode is not supported by this pgpool_setup",
    "-s": "replication slots (-s) are not supported by this pgpool_setup",
    "-r": "pg_rewind (-r) is not supported by this pgpool_setup",
    "-c": "testing RPM sample files (-c) is not supported by this pgpool_setup",
}
FLAGS = {"--no-stop": "no_stop", "-d": "debug", "-e": "no_pg", "-t": "test"}
NUMBERS = {"-n": "num_clusters", "-p": "base_port", "-pg": "pg_base_port"}
USAGE = ("usage: {prog} [-m r|s|n|l|y|i] [-n num_clusters] [-p base_port] [-pg pg_base_port][--no-stop] "
         "[-d] [-s] [-r] [-e] [-t] [-c]\n")
PCP_USER = PCP_PASSWORD = SUPERUSER
TEST_DATABASE = "test"
READY_TIMEOUT = 30

POOL_HBA = """\
# pool_hba.conf written by pgpool_setup (used when enable_pool_hba = on)
# TYPE  DATABASE    USER        CIDR-ADDRESS          METHOD
host    all         scram_user  0.0.0.0/0             scram-sha-256
host    all         md5_user    0.0.0.0/0             md5
local   all         scram_user                        scram-sha-256
local   all         md5_user                          md5
local   all         all                               trust
host    all         all         127.0.0.1/32          trust
host    all         all         ::1/128               trust
"""


class UsageError(Exception):
    """Bad command line; the message (may be empty) goes before the usage line."""


class SetupFailed(Exception):
    """The installation was built but does not work; the message says what happened."""


@dataclass
class Options:
    """What the command line (and BASEPORT / NUMCLUSTERS / ENABLE_TEST in the environment) asked for."""

    mode: str = "s"
    num_clusters: int = 2
    base_port: int = 11000
    pg_base_port: int | None = None
    no_stop: bool = False
    debug: bool = False
    no_pg: bool = False
    test: bool = False

    @property
    def clustering_mode(self) -> str:
        return MODES[self.mode][0]

    @property
    def mode_name(self) -> str:
        return MODES[self.mode][1]


def parse_args(argv: list[str], environ: dict[str, str]) -> Options:
    """Options from pgpool_setup's arguments; UsageError for anything it does not take."""
    opts = Options(test=environ.get("ENABLE_TEST") == "true")
    for name, env in (("base_port", "BASEPORT"), ("num_clusters", "NUMCLUSTERS")):
        if environ.get(env):
            setattr(opts, name, _number(env, environ[env]))
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in FLAGS:
            setattr(opts, FLAGS[arg], True)
        elif arg in NUMBERS or arg == "-m":
            if not args:
                raise UsageError(f"option {arg} needs a value")
            value = args.pop(0)
            if arg == "-m":
                if f"-m {value}" in NOT_SUPPORTED:
                    raise UsageError(NOT_SUPPORTED[f"-m {value}"])
                if value not in MODES:
                    raise UsageError("")
                opts.mode = value
            else:
                setattr(opts, NUMBERS[arg], _number(arg, value))
        elif arg in NOT_SUPPORTED:
            raise UsageError(NOT_SUPPORTED[arg])
        else:
            raise UsageError("")
    if opts.num_clusters < 1:
        raise UsageError("the number of clusters (-n) must be at least 1")
    return opts


def _number(what: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f'{what}: "{value}" is not a number') from None


@dataclass
class Layout:
    """Where everything goes, the ports and the commands the scripts run."""

    base: Path
    opts: Options
    pgbin: Path
    pgpool_command: str            # shell words that run pgpool
    run_as_postgres: str = ""      # "runuser -u postgres --" when we are root
    socket_dir: str = "/tmp"
    pg_ports: list[int] = field(init=False)

    def __post_init__(self) -> None:
        first = self.opts.pg_base_port if self.opts.pg_base_port is not None else self.opts.base_port + 2
        self.pg_ports = [first + i for i in range(self.opts.num_clusters)]

    pgpool_port = property(lambda self: self.opts.base_port)
    pcp_port = property(lambda self: self.opts.base_port + 1)
    etc = property(lambda self: self.base / "etc")

    def datadir(self, i: int) -> Path:
        return self.base / f"data{i}"

    def all_ports(self) -> list[int]:
        return [self.pgpool_port, self.pcp_port, *self.pg_ports]


def pgpool_settings(lay: Layout) -> dict[str, object]:
    """What pgpool_setup appends to the sample pgpool.conf."""
    opts = lay.opts
    settings: dict[str, object] = {"backend_clustering_mode": opts.clustering_mode}
    for i, port in enumerate(lay.pg_ports):
        settings.update({f"backend_hostname{i}": "localhost", f"backend_port{i}": port, f"backend_weight{i}": 1,
                         f"backend_data_directory{i}": str(lay.datadir(i)), f"backend_flag{i}": "ALLOW_TO_FAILOVER"})
        if opts.mode == "s":
            settings[f"backend_application_name{i}"] = f"server{i}"
    settings.update({"sr_check_user": SUPERUSER, "recovery_user": SUPERUSER, "recovery_password": ""})
    for i in range(opts.num_clusters):
        settings.update({f"health_check_period{i}": 10, f"health_check_timeout{i}": 20,
                         f"health_check_user{i}": SUPERUSER, f"health_check_password{i}": "",
                         f"health_check_database{i}": "postgres", f"health_check_max_retries{i}": 3,
                         f"health_check_retry_delay{i}": 1})
    settings.update({"memqcache_oiddir": str(lay.base / "log" / "pgpool" / "oiddir"), "log_per_node_statement": True})
    if opts.mode == "s":
        settings["failover_command"] = f"{lay.etc / 'failover.sh'} %d %h %p %D %m %H %M %P %r %R %N %S"
    settings.update({"socket_dir": lay.socket_dir, "pcp_socket_dir": lay.socket_dir, "logging_collector": False,
                     "log_line_prefix": "%m: %a pid %p: "})
    if opts.test:
        settings["health_check_test"] = True
    settings.update({"port": lay.pgpool_port, "pcp_port": lay.pcp_port,
                     "pid_file_name": str(lay.base / "run" / "pgpool.pid"), "logdir": str(lay.base / "log")})
    return settings


def pgpool_conf_text(lay: Layout) -> str:
    return sample_pgpool_conf() + "\n# ---- set by pgpool_setup ----\n" + format_conf(pgpool_settings(lay))


def _script(lay: Layout, purpose: str, lines: list[str]) -> str:
    head = ["#!/bin/sh", f"# {purpose} (written by pgpool_setup)",
            f"dir={shlex.quote(str(lay.base))}", f"PGBIN={shlex.quote(str(lay.pgbin))}",
            f"PGPOOL={shlex.quote(lay.pgpool_command)}", f"AS_POSTGRES={shlex.quote(lay.run_as_postgres)}",
            'cd "$dir" || exit 1']
    return "\n".join(head + lines) + "\n"


def _pgpool_files() -> str:
    return '-f "$dir/etc/pgpool.conf" -F "$dir/etc/pcp.conf" -a "$dir/etc/pool_hba.conf"'


def startall_text(lay: Layout) -> str:
    lines = [f'$AS_POSTGRES "$PGBIN/pg_ctl" -w -D "$dir/data{i}" -l "$dir/data{i}.log" start'
             for i in range(lay.opts.num_clusters)]
    debug = " -d" if lay.opts.debug else ""
    lines.append(f'$PGPOOL{debug} -D -n {_pgpool_files()} >> "$dir/log/pgpool.log" 2>&1 < /dev/null &')
    return _script(lay, "start PostgreSQL and pgpool", lines)


def shutdownall_text(lay: Layout) -> str:
    lines = ['$PGPOOL -f "$dir/etc/pgpool.conf" -m f stop && while [ -f "$dir/run/pgpool.pid" ]; do sleep 1; done']
    lines += [f'$AS_POSTGRES "$PGBIN/pg_ctl" -D "$dir/data{i}" -m f stop'
              for i in reversed(range(lay.opts.num_clusters))]
    return _script(lay, "stop pgpool and PostgreSQL", lines)


def reload_text(lay: Layout) -> str:
    return _script(lay, "make pgpool re-read its configuration", ['$PGPOOL -f "$dir/etc/pgpool.conf" reload'])


def failover_text(lay: Layout) -> str:
    """failover_command for streaming replication: promote the new main node when the primary failed."""
    return _script(lay, "failover_command: promote the new main node when the primary failed", [
        "failed_node_id=$1", "new_main_id=$5", "old_primary_node_id=$8",
        'log="$dir/log/failover.log"',
        'echo "$(date) failover: failed node $failed_node_id, new main $new_main_id, old primary $old_primary_node_id"'
        ' >> "$log"',
        'if [ "$new_main_id" = "-1" ]; then echo "no new main node is available" >> "$log"; exit 0; fi',
        'if [ "$failed_node_id" = "$old_primary_node_id" ] || [ "$old_primary_node_id" = "-1" ]; then',
        '    $AS_POSTGRES "$PGBIN/pg_ctl" -D "$dir/data$new_main_id" -w promote >> "$log" 2>&1',
        "fi",
    ])


def readme_port_text(lay: Layout) -> str:
    lines = [f"#{i + 1} port is {port}" for i, port in enumerate(lay.pg_ports)]
    return "\n".join(lines + [f"pgpool port is {lay.pgpool_port}", f"pcp port is {lay.pcp_port}"]) + "\n"


def bashrc_ports_text(lay: Layout) -> str:
    return (f"export PGPOOL_PORT={lay.pgpool_port}\nexport PCP_PORT={lay.pcp_port}\n"
            f"export PCPPASSFILE={lay.base / 'pcppass'}\n")


def final_message(lay: Layout) -> str:
    lines = ["", f"pgpool-II setting for {lay.opts.mode_name} is done.",
             f"To start the whole system, use {lay.base / 'startall'}.",
             f"To shutdown the whole system, use {lay.base / 'shutdownall'}.",
             f'pcp command user name is "{PCP_USER}", password is "{PCP_PASSWORD}".',
             "Each PostgreSQL, pgpool-II and pcp port is as follows:"]
    text = "\n".join(lines) + "\n" + readme_port_text(lay) + "The info above is in README.port.\n"
    return text + ("CAUTION: whole system is still running.\n" if lay.opts.no_stop else "")


# ---- doing it --------------------------------------------------------------------------------------

class SetupNode(PgNode):
    """A node named dataN, as pgpool_setup names them."""

    name = property(lambda self: f"data{self.state.node_id}")


class SetupCluster(PgCluster):
    """A PgCluster whose nodes live in data0, data1, ... of the base directory."""

    def __init__(self, base_dir, state, runner=None):
        super().__init__(base_dir, state, runner)
        self.nodes = [SetupNode(self, node) for node in state.nodes]


def pgpool_command() -> str:
    """Shell words that run pgpool: $PGPOOL_INSTALL_DIR/bin/pgpool when that is set (pgpool-II's
    variable), else this Python's pgpool with this package on PYTHONPATH."""
    install_dir = os.environ.get("PGPOOL_INSTALL_DIR")
    if install_dir:
        return shlex.quote(f"{install_dir}/bin/pgpool")
    package_root = Path(__file__).resolve().parents[2]
    return f"env PYTHONPATH={shlex.quote(str(package_root))} {shlex.quote(sys.executable)} -m pgpool.cli"


def say(text: str, end: str = "\n") -> None:
    sys.stdout.write(text + end)
    sys.stdout.flush()


def build_clusters(lay: Layout, runner: Runner) -> SetupCluster:
    """Create data0 (primary) and its standbys, promote them in the non-streaming modes, create the
    test database and give every node its pgpool_setup port; the nodes are left stopped."""
    count = lay.opts.num_clusters
    say(f"creating database cluster {lay.datadir(0)}" + (f"..{lay.datadir(count - 1).name}" if count > 1 else "")
        + "...", end="")
    cluster = SetupCluster.create(lay.base, num_standbys=count - 1, runner=runner)
    cluster.primary.psql(f"CREATE DATABASE {TEST_DATABASE}")
    say("done.")
    if lay.opts.mode != "s":
        say("making every node an independent primary")
        for node in cluster.standbys:
            _wait(lambda: node.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{TEST_DATABASE}'") == "1",
                  f"{node.name} did not replay the creation of database {TEST_DATABASE}")
            node.promote()
            node.state.role = "primary"
    cluster.stop()
    for node, port in zip(cluster.nodes, lay.pg_ports):
        node.state.port = port
        node.state.application_name = f"server{node.node_id}"
    for node in cluster.nodes:
        node.write_node_conf()
    cluster.save()
    return cluster


def _wait(predicate, failure: str, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(failure)
        time.sleep(0.5)


def write_files(lay: Layout) -> None:
    """pgpool's configuration, the scripts and the port notes."""
    for sub in ("etc", "run", "log", "log/pgpool/oiddir"):
        (lay.base / sub).mkdir(parents=True, exist_ok=True)
    files = {"etc/pgpool.conf": (pgpool_conf_text(lay), 0o644), "etc/pool_hba.conf": (POOL_HBA, 0o644),
             "etc/pcp.conf": (f"# USERID:MD5PASSWD\n{PCP_USER}:{hashlib.md5(PCP_PASSWORD.encode()).hexdigest()}\n",
                              0o644),
             "pcppass": (f"localhost:{lay.pcp_port}:{PCP_USER}:{PCP_PASSWORD}\n", 0o600),
             "startall": (startall_text(lay), 0o755), "shutdownall": (shutdownall_text(lay), 0o755),
             "pgpool_reload": (reload_text(lay), 0o755),
             "README.port": (readme_port_text(lay), 0o644), "bashrc.ports": (bashrc_ports_text(lay), 0o755)}
    if lay.opts.mode == "s":
        files["etc/failover.sh"] = (failover_text(lay), 0o755)
    for name, (text, mode) in files.items():
        path = lay.base / name
        path.write_text(text)
        path.chmod(mode)
    update_entry(lay.etc / "pool_passwd", SUPERUSER, encrypt_password(SUPERUSER, SUPERUSER))


def run_script(lay: Layout, name: str) -> None:
    """Run startall / shutdownall, its output going to pgpool_setup.log."""
    with open(lay.base / "pgpool_setup.log", "ab") as log:
        subprocess.run([str(lay.base / name)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       cwd=lay.base, check=False, timeout=300)


def show_pool_nodes(lay: Layout, runner: Runner) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return subprocess.run([str(runner.bindir / "psql"), "-X", "-h", "localhost", "-p", str(lay.pgpool_port),
                           "-U", SUPERUSER, "-d", TEST_DATABASE, "-c", "show pool_nodes"],
                          capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=30)


def start_and_show(lay: Layout, runner: Runner) -> None:
    """startall, wait until pgpool answers, print SHOW pool_nodes; an error pgpool answers with
    (or none within READY_TIMEOUT) raises SetupFailed."""
    say("starting PostgreSQL and pgpool (startall)")
    run_script(lay, "startall")
    deadline = time.monotonic() + READY_TIMEOUT
    while (shown := show_pool_nodes(lay, runner)).returncode != 0:
        answered = any(f"{level}:  " in shown.stderr for level in ("FATAL", "ERROR"))
        if answered or time.monotonic() > deadline:
            problem = "refused" if answered else f"did not answer within {READY_TIMEOUT}s"
            raise SetupFailed(f"pgpool on port {lay.pgpool_port} {problem}: {shown.stderr.strip()}\n"
                              f"see {lay.base / 'log' / 'pgpool.log'}")
        time.sleep(0.5)
    say(shown.stdout, end="")


def postgres_major_version(runner: Runner) -> int:
    """PostgreSQL's version as pgpool_setup computes it (15.x -> 150)."""
    words = runner.run("initdb", "-V").stdout.split()
    return int(words[2].split(".")[0]) * 10


def setup(prog: str, opts: Options) -> int:
    base = Path.cwd().resolve()
    if any(not name.startswith(".") for name in os.listdir(base)):
        say(f"{prog}: Current directory is not empty. Please remove files and directories then try again.")
        return 1
    runner = Runner(os.environ.get("PGBIN") or None)
    lay = Layout(base, opts, runner.bindir, pgpool_command(),
                 f"runuser -u {runner.os_user} --" if runner.as_root else "",
                 os.environ.get("PGSOCKET_DIR", "/tmp"))
    busy = [port for port in lay.all_ports() if not port_is_free(port)]
    if busy:
        say(f"{prog}: port {', '.join(map(str, busy))} already in use; choose another base port with -p")
        return 1
    say(f"PostgreSQL major version: {postgres_major_version(runner)}")
    say(f"Starting set up in {opts.mode_name}")
    if not opts.no_pg:
        build_clusters(lay, runner)
    say("creating pgpool.conf, pcp.conf, pool_hba.conf, pool_passwd, startall and shutdownall")
    write_files(lay)
    if not opts.no_pg:
        try:
            start_and_show(lay, runner)
        finally:
            if not opts.no_stop:
                say("shutdown all")
                run_script(lay, "shutdownall")
    say(final_message(lay), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    prog = argv[0]
    try:
        opts = parse_args(argv[1:], dict(os.environ))
    except UsageError as exc:
        if str(exc):
            sys.stderr.write(f"{prog}: {exc}\n")
        sys.stdout.write(USAGE.format(prog=prog))
        return 1
    try:
        return setup(prog, opts)
    except (CommandError, SetupFailed, TimeoutError, OSError) as exc:
        sys.stdout.flush()
        sys.stderr.write(f"{prog}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
