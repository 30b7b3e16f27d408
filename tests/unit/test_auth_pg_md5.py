"""pg_md5: output, exit status and pool_passwd updates, compared with pgpool-II's /usr/sbin/pg_md5."""

import hashlib
import os
import pty
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

REAL = "/usr/sbin/pg_md5"
OURS = [sys.executable, "-m", "pgpool.tools.pg_md5"]
ROOT = Path(__file__).resolve().parents[2]
needs_real = pytest.mark.skipif(not os.path.exists(REAL), reason=f"pgpool-II's {REAL} is not installed")


def run(cmd, args, cwd=None, stdin=subprocess.DEVNULL):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd, env=env, stdin=stdin, timeout=30)
    prog = cmd[-1] if cmd is not OURS else None
    out, err = proc.stdout, proc.stderr
    if prog is None:   # python -m: argv[0] is the module's file
        prog = str(ROOT / "pgpool" / "tools" / "pg_md5.py")
    return proc.returncode, out.replace(prog, "PROG"), err.replace(prog, "PROG")


def both(args, **kw):
    return run([REAL], args, **kw), run(OURS, args, **kw)


def test_hash_known_values():
    assert run(OURS, ["foo"]) == (0, "acbd18db4cc2f85cedef654fccc4a4d8\n", "")
    assert run(OURS, ["--", "-x"]) == (0, hashlib.md5(b"-x").hexdigest() + "\n", "")


@needs_real
@pytest.mark.parametrize("args", [
    ["foo"], [""], ["p\u00e4ss w\u00f6rd"], ["a" * 128], ["a" * 129], [], ["-h"], ["--help"], ["-x"],
    ["--bogus"], ["-f"], ["--config-file"], ["--help=1"], ["-u", "u" * 129, "pw"], ["first", "second"],
    ["-p"], ["--prompt"], ["--", "-dash"],
])
def test_same_as_pgpool(args):
    real, ours = both(args)
    assert ours == real


@needs_real
def test_input_file_same_as_pgpool(tmp_path):
    lines = ["bob:pw1", "", "badline", "carol:", "dave:pw:x", ":nouser", "e\u00e9:\u00fcml", "x" * 130 + ":pw",
             "long:" + "p" * 129]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    real, ours = both(["-i", "in.txt"], cwd=tmp_path)
    assert ours == real
    missing_real, missing_ours = both(["-i", "nope.txt"], cwd=tmp_path)
    assert missing_ours == missing_real


def pool_passwd_after(cmd, tmp_path, steps, conf_text="pool_passwd = 'pool_passwd'\n"):
    work = tmp_path / Path(cmd[-1]).name
    work.mkdir()
    (work / "pgpool.conf").write_text(conf_text)
    results = [run(cmd, [*step, "-f", str(work / "pgpool.conf")], cwd=tmp_path) for step in steps]
    path = work / "pool_passwd"
    return results, (path.read_text() if path.exists() else None)


@needs_real
def test_md5auth_updates_pool_passwd_like_pgpool(tmp_path):
    (tmp_path / "pairs").write_text("bob:pw1\ncarol:pw2\n")
    steps = [["-m", "-u", "alice", "secret"], ["-m", "-u", "bob", "x"], ["-m", "secret2"],
             ["-m", "-u", "alice", "secret3"], ["--md5auth", "--username=dave", "d"], ["-m", "-i", "pairs"]]
    real = pool_passwd_after([REAL], tmp_path, steps)
    ours = pool_passwd_after(OURS, tmp_path, steps)
    assert ours == real
    assert "alice:md54c3e83040e78e53d694d93d76ac6080e\n" in ours[1]


def test_md5auth_relative_to_config_dir(tmp_path):
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "pgpool.conf").write_text("pool_passwd = 'sub/passwd'\n")
    (conf_dir / "sub").mkdir()
    assert run(OURS, ["-m", "-u", "alice", "-f", "etc/pgpool.conf", "secret"], cwd=tmp_path) == (0, "", "")
    assert (conf_dir / "sub" / "passwd").read_text() == "alice:md54a0a68b43b6cd5cf266fa02f196e2371\n"


@needs_real
def test_md5auth_missing_config(tmp_path):
    real, ours = both(["-m", "-u", "alice", "-f", str(tmp_path / "nope.conf"), "pw"])
    assert ours[0] == real[0] == 1
    assert ours[2].endswith("Unable to get configuration. Exiting...\n\n")
    assert "nope.conf" in ours[2]


def prompt(cmd, typed: str):
    """Run with a pseudo terminal as stdin (pg_md5 -p insists on a tty)."""
    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([*cmd, "-p"], stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    try:
        deadline = time.monotonic() + 10
        while termios.tcgetattr(master)[3] & termios.ECHO:     # type only once echo is off
            assert time.monotonic() < deadline, "pg_md5 -p never turned terminal echo off"
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
    return proc.returncode, out.decode(), err.decode(), echoed


@needs_real
def test_prompt_same_as_pgpool():
    real, ours = prompt([REAL], "secret\n"), prompt(OURS, "secret\n")
    assert ours[:3] == real[:3] == (0, "password: \n5ebe2294ecd0e0f08eab7690d2a6ee69\n", "")
    assert b"secret" not in ours[3]                       # not echoed
