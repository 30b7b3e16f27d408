"""The pg_enc command: AES-256 encrypted pool_passwd passwords, as pgpool-II 4.3's pg_enc.

``pg_enc PASSWORD`` prints the encrypted password and its pool_passwd form (``AES`` + base64);
the key comes from ``-K KEY``, ``-P`` (the terminal) or the key file (``-k FILE``, else
``$PGPOOLKEYFILE``, else ``~/.pgpoolkey``).  ``-p`` (or no PASSWORD) reads the password from the
terminal; ``-m`` stores ``USER:AES...`` (``-u USER``, default the current OS user) in the
pool_passwd file named by the pgpool.conf given with ``-f``; ``-i FILE`` reads ``user:password``
lines.  Messages, exit codes and output match pgpool-II's tool.
"""

from __future__ import annotations

import getopt
import os
import pwd
import sys
import termios

from pgpool import POOL_CODENAME, POOL_VERSION
from pgpool.auth import aes
from pgpool.auth.pool_passwd import update_entry
from pgpool.tools.pg_md5 import (DEFAULT_CONFIG_FILE, Exit, _getopt_message, pool_passwd_path,
                                  run_tool)

MAX_USER_NAME_LEN = 128
MAX_PGPASS_LEN = 128

SHORT_OPTIONS = "hPpmf:i:u:k:K:"
LONG_OPTIONS = {"help": "h", "prompt": "p", "prompt-for-key": "P", "update-pass": "m", "username=": "u",
                "enc-key=": "K", "key-file=": "k", "config-file=": "f", "input-file=": "i"}
FLAGS = {"p": "prompt", "P": "prompt_for_key", "m": "update"}
VALUES = {"f": "config_file", "i": "input_file", "k": "key_file", "K": "enc_key"}

USAGE = """pgpool-II version {version} ({codename}),
  password encryption utility for Pgpool

Usage:
  {prog} [OPTIONS] <PASSWORD>
  -k, --key-file=KEY_FILE
                       Set the path to the encryption key file.
                       Default: {home}/.pgpoolkey
                       Can be overridden by the PGPOOLKEYFILE environment variable.
  -K, --enc-key=ENCRYPTION_KEY
                       Encryption key to be used for encrypting database passwords.
  -f, --config-file=CONFIG_FILE
                       Specifies the pgpool.conf file.
  -i, --input-file=INPUT-FILE
                       Specify file containing username and password pairs.
  -p, --prompt         Prompt for database password using standard input.
  -P, --prompt-for-key Prompt for encryption key using standard input.
  -m, --update-pass    Create encrypted password entry in the pool_passwd file.
  -u, --username       The username for the pool_password entry.
  -h, --help           Print this help.

"""


def usage(prog: str, status: int) -> Exit:
    """Print the usage (stdout for status 0, else stderr) and return the Exit to raise."""
    stream = sys.stdout if status == 0 else sys.stderr
    stream.write(USAGE.format(version=POOL_VERSION, codename=POOL_CODENAME, prog=prog,
                              home=aes.home_directory() or "USER-HOME-DIR"))
    return Exit(status)


def _nbytes(text: str) -> int:
    return len(os.fsencode(text))


def _truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` bytes, as strlcpy into a fixed buffer does."""
    return os.fsdecode(os.fsencode(text)[:limit])


def prompt_line(label: str, bufsize: int) -> str:
    """Read one line from the terminal, echo and line editing off, as pgpool-II's pg_enc does
    (fgets into ``bufsize`` bytes: a longer line is left for the next read)."""
    if not sys.stdin.isatty():
        sys.stderr.write("stdin is not tty\n")
        raise Exit(1)
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    raw = termios.tcgetattr(fd)
    raw[0] &= ~(termios.BRKINT | termios.ISTRIP | termios.IXON)
    raw[3] &= ~(termios.ICANON | termios.IEXTEN | termios.ECHO | termios.ECHOE | termios.ECHOK | termios.ECHONL)
    raw[6][termios.VMIN], raw[6][termios.VTIME] = 1, 0
    try:
        termios.tcsetattr(fd, termios.TCSANOW, raw)
        sys.stdout.write(label)
        sys.stdout.flush()
        line = sys.stdin.buffer.readline(bufsize - 1)
        if not line:
            sys.stderr.write("Couldn't read input from stdin. (fgets(): Success)")
            raise Exit(1)
        sys.stdout.write("\n")
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)
    return os.fsdecode(line.removesuffix(b"\n"))


def print_encrypted(password: str, key: bytes) -> None:
    encoded = aes.encrypt_password(password, key).removeprefix(aes.AES_PREFIX)
    sys.stdout.write(f"\n{encoded}\npool_passwd string: {aes.AES_PREFIX}{encoded}\n")


def update_pool_passwd(config_file: str, user: str, password: str, key: bytes) -> None:
    """Store ``user``'s encrypted password in the pool_passwd of ``config_file`` (creating it)."""
    path = pool_passwd_path(config_file)
    user = user or pwd.getpwuid(os.getuid()).pw_name
    try:
        update_entry(path, user, aes.encrypt_password(password, key))
    except OSError as exc:
        sys.stderr.write(f'initializing pool password, failed to open file:"{path}": {exc.strerror}\n')
        raise Exit(1) from None


def from_input_file(config_file: str, input_file: str, key: bytes, update: bool) -> None:
    """Process ``user:password`` lines as pg_enc -i does: blank lines are skipped silently,
    bad ones reported on stderr, the others encrypted (printed, or stored with -m)."""
    sys.stdout.write(f"trying to read username:password pairs from file {input_file}\n")
    try:
        with open(input_file, "rb") as fh:
            lines = fh.read().split(b"\n")
    except OSError as exc:
        sys.stderr.write(f'failed to open input_file "{input_file}" ({exc.strerror})\n\n')
        raise Exit(1) from None
    if lines[-1] == b"":                     # the file ends with a newline (or is empty)
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        if not raw:
            continue
        user, colon, password = raw.partition(b":")
        if not colon or not password:
            problem = "invalid username:password pair"
        elif len(user) > MAX_USER_NAME_LEN:
            problem = f"input exceeds maximum username length {MAX_USER_NAME_LEN}"
        elif len(password) > MAX_PGPASS_LEN:
            problem = f"input exceeds maximum password length {MAX_PGPASS_LEN}"
        else:
            problem = None
        if problem:
            sys.stderr.write(f"LINE#{number:02d}: {problem}\n")
        elif update:
            update_pool_passwd(config_file, os.fsdecode(user), os.fsdecode(password), key)
        else:
            print_encrypted(os.fsdecode(password), key)


def read_key(options: dict) -> bytes | None:
    """The encryption key: -P prompts, else -K, else the key file (announced on stdout)."""
    if options["prompt_for_key"]:
        key = prompt_line("encryption key: ", aes.MAX_KEY_LEN)
        if not key:
            sys.stderr.write("encryption key not provided\n")
            raise Exit(1)
        return os.fsencode(key)
    if options["enc_key"]:
        return os.fsencode(options["enc_key"])
    path = options["key_file"] or aes.default_key_file() or ""
    sys.stdout.write(f"trying to read key from file {path}\n")
    key_file = aes.read_key_file(path)
    for warning in key_file.warnings:
        sys.stderr.write(f"WARNING: pid {os.getpid()}: {warning}\n\n")
    return key_file.key


def parse_options(prog: str, argv: list[str]) -> tuple[dict, list[str]]:
    try:
        opts, args = getopt.gnu_getopt(argv, SHORT_OPTIONS, list(LONG_OPTIONS))
    except getopt.GetoptError as err:
        sys.stderr.write(f"{prog}: {_getopt_message(err)}\n")
        raise usage(prog, 0) from None
    long_to_short = {name.rstrip("="): short for name, short in LONG_OPTIONS.items()}
    options = {name: False for name in FLAGS.values()} | {name: "" for name in VALUES.values()}
    options["config_file"], options["username"], options["input_file"] = DEFAULT_CONFIG_FILE, "", None
    for opt, value in opts:
        short = long_to_short.get(opt.lstrip("-"), opt.lstrip("-"))
        if short == "h":
            raise usage(prog, 0)
        if short in FLAGS:
            options[FLAGS[short]] = True
        elif short in VALUES:
            options[VALUES[short]] = value
        elif short == "u":
            if _nbytes(value) > MAX_USER_NAME_LEN + 1:
                sys.stderr.write("Error: input exceeds maximum username length!\n\n")
                raise Exit(1)
            options["username"] = _truncate(value, MAX_USER_NAME_LEN)
    return options, args


def run(argv: list[str]) -> None:
    prog = argv[0]
    options, args = parse_options(prog, argv[1:])
    password = ""
    if options["input_file"] is None:
        if options["prompt"] or not args:
            password = prompt_line("db password: ", MAX_PGPASS_LEN)
        else:
            password = args[0]
            if _nbytes(password) > MAX_PGPASS_LEN:
                sys.stderr.write(f"Error: Input exceeds maximum password length given:{_nbytes(password)} "
                                 f"max allowed:{MAX_PGPASS_LEN}!\n\n")
                raise usage(prog, 1)
    key = read_key(options)
    if key is None:
        sys.stdout.flush()
        sys.stderr.write("encryption key not provided\n")
        raise Exit(1)
    if options["input_file"] is not None:
        from_input_file(options["config_file"], options["input_file"], key, options["update"])
    elif options["update"]:
        update_pool_passwd(options["config_file"], options["username"], password, key)
    else:
        print_encrypted(password, key)


def main(argv: list[str] | None = None) -> int:
    return run_tool(run, argv)


if __name__ == "__main__":
    sys.exit(main())
