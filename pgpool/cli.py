"""The `pgpool` command: start the server, or stop / reload a running one (pgpool-II's options)."""

import argparse
import os
import signal
import sys
import time

from pgpool import POOL_CODENAME, POOL_VERSION, __version__

DEFAULT_DIR = "/etc/pgpool2"

USAGE = f"""pgpool-II version {POOL_VERSION} ({POOL_CODENAME}),
  A generic connection pool/replication/load balance server for PostgreSQL

Usage:
  pgpool [ -c] [ -f CONFIG_FILE ] [ -F PCP_CONFIG_FILE ] [ -a HBA_CONFIG_FILE ]
         [ -n ] [ -D ] [ -d ]
  pgpool [ -f CONFIG_FILE ] [ -F PCP_CONFIG_FILE ] [ -a HBA_CONFIG_FILE ]
         [ -m SHUTDOWN-MODE ] stop
  pgpool [ -f CONFIG_FILE ] [ -F PCP_CONFIG_FILE ] [ -a HBA_CONFIG_FILE ] reload

Common options:
  -a, --hba-file=HBA_CONFIG_FILE
                      Set the path to the pool_hba.conf configuration file
                      (default: {DEFAULT_DIR}/pool_hba.conf)
  -f, --config-file=CONFIG_FILE
                      Set the path to the pgpool.conf configuration file
                      (default: {DEFAULT_DIR}/pgpool.conf)
  -k, --key-file=KEY_FILE
                      Set the path to the pgpool key file
                      (default: ~/.pgpoolkey)
                      can be over ridden by PGPOOLKEYFILE environment variable
  -F, --pcp-file=PCP_CONFIG_FILE
                      Set the path to the pcp.conf configuration file
                      (default: {DEFAULT_DIR}/pcp.conf)
  -h, --help          Print this help

Start options:
  -C, --clear-oidmaps Clear query cache oidmaps when memqcache_method is memcached
                      (If shmem, discards whenever pgpool starts.)
  -n, --dont-detach   Don't run in daemon mode, does not detach control tty
  -x, --debug-assertions   Turns on various assertion checks, This is a debugging aid
  -D, --discard-status Discard pgpool_status file and do not restore previous status
  -d, --debug         Debug mode

Stop options:
  -m, --mode=SHUTDOWN-MODE
                      Can be "smart", "fast", or "immediate"

Shutdown modes are:
  smart       quit after all clients have disconnected
  fast        quit directly, with proper shutdown
  immediate   the same mode as fast
"""

STOP_SIGNALS = {"s": signal.SIGTERM, "smart": signal.SIGTERM, "f": signal.SIGINT,
                "fast": signal.SIGINT, "i": signal.SIGQUIT, "immediate": signal.SIGQUIT}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        _err(f"pgpool: {message}")
        sys.stderr.write(USAGE)
        sys.exit(1)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pgpool", add_help=False)
    p.add_argument("-a", "--hba-file")
    p.add_argument("-f", "--config-file", default=f"{DEFAULT_DIR}/pgpool.conf")
    p.add_argument("-F", "--pcp-file")
    p.add_argument("-k", "--key-file")
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("-C", "--clear-oidmaps", action="store_true")
    p.add_argument("-c", "--clear-cache", action="store_true")
    p.add_argument("-n", "--dont-detach", action="store_true")
    p.add_argument("-x", "--debug-assertions", action="store_true")
    p.add_argument("-D", "--discard-status", action="store_true")
    p.add_argument("-d", "--debug", action="store_true")
    p.add_argument("-m", "--mode", default="smart")
    p.add_argument("-v", "--version", action="store_true")
    p.add_argument("command", nargs="?")
    return p


def _err(msg: str) -> None:
    sys.stderr.write(msg + "\n")


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_server(cfg, sig: int, wait: bool) -> int:
    pid = _read_pid(cfg.pid_file_name)
    if pid is None:
        _err(f"FATAL:  could not read pid file \"{cfg.pid_file_name}\"")
        return 3
    if not _alive(pid):
        _err(f"FATAL:  could not send signal to process {pid}: the process does not exist")
        return 3
    os.kill(pid, sig)
    if not wait:
        return 0
    sys.stderr.write(f"stop request sent to pgpool (pid: {pid}). waiting for termination...")
    sys.stderr.flush()
    while _alive(pid):
        time.sleep(0.2)
        sys.stderr.write(".")
        sys.stderr.flush()
    sys.stderr.write("done.\n")
    return 0


def _daemonize(log_file: str) -> None:
    """Detach from the terminal. Until logging_collector / syslog exist, the log (stderr) goes
    to `log_file` instead of /dev/null."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    fd = os.open("/dev/null", os.O_RDWR)
    os.dup2(fd, 0)
    os.dup2(fd, 1)
    if fd > 2:
        os.close(fd)
    try:
        lfd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    except OSError:
        lfd = os.open("/dev/null", os.O_WRONLY)
    os.dup2(lfd, 2)
    if lfd > 2:
        os.close(lfd)


def _check_pid_file(path: str) -> bool:
    """False if another pgpool owns the pid file; removes a stale one."""
    pid = _read_pid(path)
    if pid is None:
        if os.path.exists(path):
            os.unlink(path)
        return True
    if pid != os.getpid() and _alive(pid):
        _err(f"FATAL:  could not write pid file: pid file found. is another pgpool({pid}) "
             "running?")
        return False
    _err("WARNING:  pid file found but it seems bogus. Trying to start pgpool anyway...")
    os.unlink(path)
    return True


def main(argv=None) -> int:
    args, rest = _parser().parse_known_args(argv)
    if args.command not in (None, "stop", "reload"):
        rest.insert(0, args.command)
    if rest:
        _err(f"pgpool: unrecognized option or argument: {' '.join(rest)}")
        _err('Try "pgpool --help" for more information.')
        return 1
    if args.help:
        sys.stdout.write(USAGE)
        return 0
    if args.version:
        print(f"pgpool-II version {POOL_VERSION} ({POOL_CODENAME}) [pgpool-py {__version__}]")
        return 0
    from pgpool import log
    from pgpool.config import ConfigError, load_config
    config_file = os.path.abspath(args.config_file)
    try:
        cfg = load_config(config_file)
    except ConfigError as e:
        _err(f"FATAL:  {e}")
        return 1
    except OSError as e:
        _err(f"FATAL:  could not open configuration file \"{config_file}\": {e.strerror}")
        return 1
    if args.debug:
        cfg.set("log_min_messages", "debug5")
    log.configure(cfg)
    if args.command == "stop":
        sig = STOP_SIGNALS.get(args.mode)
        if sig is None:
            _err(f"FATAL:  invalid shutdown mode \"{args.mode}\"")
            return 1
        return _signal_server(cfg, sig, wait=True)
    if args.command == "reload":
        return _signal_server(cfg, signal.SIGHUP, wait=False)
    from pgpool.auth.pool_passwd import set_key_file
    set_key_file(args.key_file)       # -k, else $PGPOOLKEYFILE, else ~/.pgpoolkey; before daemonizing
    pcp_file = args.pcp_file or os.path.join(os.path.dirname(config_file), "pcp.conf")
    hba_file = args.hba_file and os.path.abspath(args.hba_file)
    if not _check_pid_file(cfg.pid_file_name):
        return 1
    from pgpool.processes.parent import Server, StartupFailure
    server = Server(cfg, config_file, pcp_file, hba_file, discard_status=args.discard_status)
    try:
        server.start()
    except StartupFailure as e:
        log.log("FATAL", str(e))
        return 3
    if not args.dont_detach:
        _daemonize(os.path.join(cfg.logdir, "pgpool.log"))
    try:
        with open(cfg.pid_file_name, "w") as f:
            f.write(f"{os.getpid()}\n")
    except OSError as e:
        log.log("FATAL", f"could not write pid file \"{cfg.pid_file_name}\": {e.strerror}")
        return 3
    try:
        return server.run()
    finally:
        if _read_pid(cfg.pid_file_name) == os.getpid():
            try:
                os.unlink(cfg.pid_file_name)
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(main())
