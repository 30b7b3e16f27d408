"""The pg_md5 command: md5 password hashes and pool_passwd entries, as pgpool-II's pg_md5.

``pg_md5 PASSWORD`` prints md5hex(PASSWORD); ``-p`` reads the password from the terminal;
``-m`` (with ``-u USER``, default the current OS user) stores ``USER:md5<md5hex(PASSWORD+USER)>``
in the pool_passwd file named by the ``pool_passwd`` setting of the pgpool.conf given with ``-f``
(a relative name is relative to that file's directory); ``-i FILE`` reads ``user:password`` lines.
"""

from __future__ import annotations

import getopt
import os
import pwd
import sys
import termios
from typing import TextIO

from pgpool.auth.md5 import encrypt_password, md5_hex
from pgpool.auth.pool_passwd import update_entry

DEFAULT_CONFIG_FILE = "/etc/pgpool2/pgpool.conf"
MAX_INPUT_SIZE = 128          # pgpool-II's MAX_USER_NAME_LEN, also the password limit

SHORT_OPTIONS = "hpmf:i:u:"
LONG_OPTIONS = {"help": "h", "prompt": "p", "md5auth": "m", "username=": "u", "config-file=": "f",
                "input-file=": "i"}

USAGE = """Usage:

  {prog} [OPTIONS]
  {prog} <PASSWORD>

  --prompt, -p         Prompt password using standard input.
  --md5auth, -m        Produce md5 authentication password.
  --username, -u USER  When producing a md5 authentication password,
                       create the pool_passwd entry for USER.
  --config-file, -f CONFIG-FILE  Specify pgpool.conf.
  --input-file, -i INPUT-FILE  Specify file containing username and password pairs.
  --help, -h           This help menu.

Warning: At most {max} characters are allowed for input.
Warning: Plain password argument is deprecated for security concerns
         and kept for compatibility. Please prefer using password
         prompt or input file method.
"""


class Exit(Exception):
    """Stop with this exit status (messages were already written)."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


def usage(prog: str, status: int) -> Exit:
    """Print the usage (stdout for status 0, else stderr) and return the Exit to raise."""
    stream = sys.stdout if status == 0 else sys.stderr
    stream.write(USAGE.format(prog=prog, max=MAX_INPUT_SIZE))
    return Exit(status)


def _getopt_message(err: getopt.GetoptError) -> str:
    """GNU getopt's wording for a bad command line."""
    opt = err.opt
    if len(opt) > 1:
        if "requires argument" in err.msg:
            return f"option '--{opt}' requires an argument"
        if "must not have an argument" in err.msg:
            return f"option '--{opt}' doesn't allow an argument"
        if "not a unique prefix" in err.msg:
            return f"option '--{opt}' is ambiguous"
        return f"unrecognized option '--{opt}'"
    if "requires argument" in err.msg:
        return f"option requires an argument -- '{opt}'"
    return f"invalid option -- '{opt}'"


def pool_passwd_path(config_file: str) -> str:
    """The pool_passwd file a pgpool.conf names (relative to the config file's directory)."""
    from pgpool.config import ConfigError, load_config
    try:
        cfg = load_config(config_file)
    except (ConfigError, OSError) as exc:
        sys.stderr.write(f"{exc}\nUnable to get configuration. Exiting...\n\n")
        raise Exit(1) from None
    if not cfg.pool_passwd:
        sys.stderr.write(f'pool_passwd is not set in "{config_file}"; nothing to update\n\n')
        raise Exit(1)
    return os.path.join(os.path.dirname(os.path.abspath(config_file)), cfg.pool_passwd)


def update_pool_passwd(config_file: str, user: str, password: str) -> None:
    """Store ``user``'s md5 password in the pool_passwd of ``config_file`` (creating the file)."""
    user = user or pwd.getpwuid(os.getuid()).pw_name
    path = pool_passwd_path(config_file)
    try:
        update_entry(path, user, encrypt_password(password, user))
    except OSError as exc:
        sys.stderr.write(f'initializing pool password, failed to open file:"{path}": {exc.strerror}\n')
        raise Exit(1) from None


def from_input_file(config_file: str, input_file: str, md5auth: bool, out: TextIO) -> None:
    """Process ``user:password`` lines of ``input_file`` as pgpool-II's pg_md5 -i does."""
    out.write(f"trying to read username:password pairs from file {input_file}\n")
    try:
        with open(input_file, encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines(keepends=True)
    except OSError as exc:
        sys.stderr.write(f'failed to open input_file "{input_file}" ({exc.strerror})\n\n')
        raise Exit(1) from None
    for number, line in enumerate(lines, start=1):
        out.write(f"LINE#{number:02d}: ")
        if line in ("", "\n"):
            out.write("BLANK LINE\n")
            continue
        user, colon, password = line.rstrip("\n").partition(":")
        if not colon or not password:
            out.write("Invalid username:password pair\n")
            continue
        if len(user) + 1 > MAX_INPUT_SIZE + 1:
            out.write(f"input exceeds maximum username length {MAX_INPUT_SIZE}\n\n")
            continue
        if len(password) > MAX_INPUT_SIZE:
            out.write(f"input exceeds maximum password length {MAX_INPUT_SIZE}\n")
            continue
        out.write(f"USER: <{user}>\n")
        if md5auth:
            out.flush()
            update_pool_passwd(config_file, user, password)
        else:
            out.write(md5_hex(password) + "\n")


def prompt_password() -> str:
    """Read one line from the terminal without echo, as pg_md5 -p does."""
    if not sys.stdin.isatty():
        sys.stderr.write("stdin is not tty\n")
        raise Exit(1)
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    quiet = termios.tcgetattr(fd)
    quiet[3] &= ~(termios.ECHO | termios.ECHOE | termios.ECHOK | termios.ECHONL)
    try:
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
        sys.stdout.write("password: ")
        sys.stdout.flush()
        line = sys.stdin.readline()
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)
    sys.stdout.write("\n")
    return line[:MAX_INPUT_SIZE].removesuffix("\n")


def run(argv: list[str]) -> None:
    prog = argv[0]
    try:
        opts, args = getopt.gnu_getopt(argv[1:], SHORT_OPTIONS, list(LONG_OPTIONS))
    except getopt.GetoptError as err:
        sys.stderr.write(f"{prog}: {_getopt_message(err)}\n")
        raise usage(prog, 0) from None
    long_to_short = {name.rstrip("="): short for name, short in LONG_OPTIONS.items()}
    config_file, input_file, user = DEFAULT_CONFIG_FILE, None, ""
    md5auth = prompt = False
    for opt, value in opts:
        short = long_to_short.get(opt.lstrip("-"), opt.lstrip("-"))
        if short == "h":
            raise usage(prog, 0)
        if short == "p":
            prompt = True
        elif short == "m":
            md5auth = True
        elif short == "f":
            config_file = value
        elif short == "i":
            input_file = value
        elif short == "u":
            if len(value) > MAX_INPUT_SIZE:
                sys.stderr.write("Error: input exceeds maximum username length!\n\n")
                raise Exit(1)
            user = value
    if input_file is not None:
        from_input_file(config_file, input_file, md5auth, sys.stdout)
        return
    if prompt:
        password = prompt_password()
    else:
        if not args:
            raise usage(prog, 1)
        password = args[0]
        if len(password) > MAX_INPUT_SIZE:
            sys.stderr.write("Error: Input exceeds maximum password length!\n\n")
            raise usage(prog, 1)
    if md5auth:
        update_pool_passwd(config_file, user, password)
    else:
        sys.stdout.write(md5_hex(password) + "\n")


def run_tool(run_argv, argv: list[str] | None) -> int:
    """Run a tool's `run(argv)` and turn its Exit into the process exit status (shared by
    pg_md5 and pg_enc)."""
    try:
        run_argv(sys.argv if argv is None else argv)
    except Exit as done:
        sys.stdout.flush()
        return done.status
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_tool(run, argv)


if __name__ == "__main__":
    sys.exit(main())
