"""pg_enc: output, exit status and pool_passwd updates, compared with pgpool-II's /usr/sbin/pg_enc.

Every -m run names its own pgpool.conf with -f (the default one is the system's).
"""

import os
import pty
import re
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

REAL = "/usr/sbin/pg_enc"
OURS = [sys.executable, "-m", "pgpool.tools.pg_enc"]
ROOT = Path(__file__).resolve().parents[2]
OUR_PROG = str(ROOT / "pgpool" / "tools" / "pg_enc.py")
needs_real = pytest.mark.skipif(not os.path.exists(REAL), reason=f"pgpool-II's {REAL} is not installed")


def normalize(text: str, prog: str) -> str:
    return re.sub(r"WARNING: pid \d+:", "WARNING: pid N:", text.replace(prog, "PROG"))


def run(cmd, args, cwd=None, env=None, stdin=subprocess.DEVNULL):
    env = dict(os.environ if env is None else env, PYTHONPATH=str(ROOT))
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd, env=env, stdin=stdin,
                          timeout=30)
    prog = OUR_PROG if cmd is OURS else cmd[-1]
    return proc.returncode, normalize(proc.stdout, prog), normalize(proc.stderr, prog)


def both(args, **kw):
    return run([REAL], args, **kw), run(OURS, args, **kw)


@pytest.fixture
def keydir(tmp_path):
    """A directory with a key file "key" (0600), a world-readable "loose" one and a pool_passwd config."""
    (tmp_path / "key").write_text("secretkey\n")
    (tmp_path / "key").chmod(0o600)
    (tmp_path / "loose").write_text("loosekey\n")
    (tmp_path / "loose").chmod(0o644)
    (tmp_path / "empty").write_text("")
    (tmp_path / "empty").chmod(0o600)
    return tmp_path


def test_known_output(keydir):
    assert run(OURS, ["-k", "key", "foo"], cwd=keydir) == (
        0, "trying to read key from file key\n\nsbPRgNtGiwnkzYmhYORmUw==\n"
           "pool_passwd string: AESsbPRgNtGiwnkzYmhYORmUw==\n", "")
    assert run(OURS, ["-K", "abc", "foo"]) == (
        0, "\n76vlTR/PoIu7yxS6o3M/Eg==\npool_passwd string: AES76vlTR/PoIu7yxS6o3M/Eg==\n", "")


@needs_real
@pytest.mark.parametrize("args", [
    ["-k", "key", "foo"], ["--key-file=key", "p\u00e4ss w\u00f6rd"], ["-K", "abc", "foo"], ["--enc-key", "k", "x"],
    ["-k", "key", "a" * 128], ["-k", "key", "a" * 129], ["-k", "key", ""], ["-k", "key", "first", "second"],
    ["foo", "-k", "key"], ["-k", "key"], ["-K", "abc", "-p"], ["-P", "foo"], ["-k", "missing", "foo"],
    ["-k", "loose", "foo"], ["-k", ".", "foo"], ["-k", "empty", "foo"], ["-K", "", "-k", "key", "foo"],
    ["-u", "u" * 129, "-k", "key", "pw"], ["-u", "u" * 130, "-k", "key", "pw"],
    [], ["-h"], ["--help"], ["-x"], ["--bogus"], ["-k"], ["-K"], ["-f"], ["-i"], ["--help=1"],
    ["--", "-k", "key"], ["-k", "key", "--", "-dash"],
])
def test_same_as_pgpool(keydir, args):
    real, ours = both(args, cwd=keydir)
    assert ours == real


@needs_real
def test_key_from_environment_same_as_pgpool(keydir):
    env = dict(os.environ, PGPOOLKEYFILE=str(keydir / "key"))
    real, ours = both(["foo"], env=env)
    assert ours == real
    assert "sbPRgNtGiwnkzYmhYORmUw==" in ours[1]
    env["PGPOOLKEYFILE"] = ""
    real, ours = both(["foo"], env=env)
    assert ours == real == (1, "trying to read key from file \n", "encryption key not provided\n")


@needs_real
def test_input_file_same_as_pgpool(keydir):
    lines = ["bob:pw1", "", "badline", "carol:", "dave:pw:x", ":nouser", "e\u00e9:\u00fcml", "x" * 128 + ":pw",
             "x" * 129 + ":pw", "long:" + "p" * 128, "long:" + "p" * 129, "win:pw\r", "last:noeol"]
    (keydir / "in.txt").write_text("\n".join(lines))
    real, ours = both(["-k", "key", "-i", "in.txt"], cwd=keydir)
    assert ours == real
    assert ours[2].count("LINE#") == 4
    real, ours = both(["-k", "key", "-i", "nope.txt"], cwd=keydir)
    assert ours == real


def pool_passwd_after(cmd, tmp_path, keydir, steps):
    work = tmp_path / ("real" if cmd[0] == REAL else "ours")
    work.mkdir()
    (work / "pgpool.conf").write_text("pool_passwd = 'pool_passwd'\n")
    results = [run(cmd, [*step, "-f", str(work / "pgpool.conf")], cwd=keydir) for step in steps]
    path = work / "pool_passwd"
    return results, (path.read_text() if path.exists() else None)


@needs_real
def test_update_pass_same_as_pgpool(tmp_path, keydir):
    (keydir / "pairs").write_text("bob:pw1\ncarol:pw2\nbadline\n")
    steps = [["-k", "key", "-m", "-u", "alice", "secret"], ["-K", "abc", "-m", "-u", "bob", "x"],
             ["-k", "key", "-m", "secret2"], ["-k", "key", "-m", "-u", "alice", "secret3"],
             ["-k", "key", "--update-pass", "--username=dave", "d"], ["-k", "key", "-m", "-i", "pairs"],
             ["-k", "missing", "-m", "-u", "eve", "e"]]
    real = pool_passwd_after([REAL], tmp_path, keydir, steps)
    ours = pool_passwd_after(OURS, tmp_path, keydir, steps)
    assert ours == real
    assert "alice:AES" in ours[1] and "root:AES" in ours[1] and "eve" not in ours[1]


def test_update_pass_relative_to_config_dir(tmp_path, keydir):
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "pgpool.conf").write_text("pool_passwd = 'sub/passwd'\n")
    (conf_dir / "sub").mkdir()
    assert run(OURS, ["-m", "-u", "alice", "-f", str(conf_dir / "pgpool.conf"), "-K", "abc", "foo"]) == (0, "", "")
    assert (conf_dir / "sub" / "passwd").read_text() == "alice:AES76vlTR/PoIu7yxS6o3M/Eg==\n"


def test_update_pass_missing_config(tmp_path):
    status, out, err = run(OURS, ["-m", "-u", "alice", "-f", str(tmp_path / "nope.conf"), "-K", "k", "pw"])
    assert status == 1
    assert err.endswith("Unable to get configuration. Exiting...\n\n") and "nope.conf" in err


def prompt(cmd, args, typed: str):
    """Run with a pseudo terminal as stdin (-p / -P insist on a tty); type once echo is off."""
    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([*cmd, *args], stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    try:
        deadline = time.monotonic() + 10
        while termios.tcgetattr(master)[3] & termios.ECHO:
            assert time.monotonic() < deadline, "the terminal echo was never turned off"
            time.sleep(0.01)
        os.write(master, typed.encode())
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    echoed = b""
    try:
        while chunk := os.read(master, 1024):
            echoed += chunk
    except OSError:
        pass
    os.close(master)
    prog = OUR_PROG if cmd is OURS else cmd[-1]
    return proc.returncode, normalize(out.decode(), prog), normalize(err.decode(), prog), echoed


@needs_real
@pytest.mark.parametrize("args, typed", [
    (["-K", "abc", "-p"], "foo\n"),
    (["-K", "abc"], "foo\n"),                      # no password argument: prompted too
    (["-P", "foo"], "\n"),                         # empty key
])
def test_prompts_same_as_pgpool(args, typed):
    real, ours = prompt([REAL], args, typed), prompt(OURS, args, typed)
    assert ours[:3] == real[:3]
    assert b"foo" not in ours[3]                   # nothing echoed


@needs_real
@pytest.mark.parametrize("args, typed", [(["-P", "foo"], "abc\n"), (["-p", "-P"], "foo\nabc\n")])
def test_prompted_key_works(args, typed):
    """pgpool-II 4.3.5 forgets a key typed at -P (fixed later in the 4.3 branch: "Fix pg_enc not
    working if both -p and -P are provided"); ours uses it, with the same prompts."""
    real, ours = prompt([REAL], args, typed), prompt(OURS, args, typed)
    assert real[0] == 1 and real[2] == "encryption key not provided\n"
    assert ours == (0, real[1] + "\n76vlTR/PoIu7yxS6o3M/Eg==\npool_passwd string: AES76vlTR/PoIu7yxS6o3M/Eg==\n", "",
                    ours[3])
    assert b"foo" not in ours[3] and b"abc" not in ours[3]
