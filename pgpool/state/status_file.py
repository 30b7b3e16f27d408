"""The pgpool_status file: one line per backend (up / down / unused), kept across restarts."""

import os

from pgpool import log

_VALID = ("up", "down", "unused")


def read_status_file(path: str, num_backends: int) -> list[str] | None:
    """Saved states by node id, or None when there is no usable file.

    As in pgpool-II, a file in which no node is up is ignored (all nodes are assumed up), and
    a file that cannot be understood is reported and ignored rather than trusted."""
    try:
        with open(path, "rb") as f:
            raw = f.read(65536)
    except FileNotFoundError:
        return None
    except OSError as e:
        log.log("WARNING", f"could not read pgpool_status file \"{path}\": {e}")
        return None
    try:
        lines = [ln.strip() for ln in raw.decode("ascii").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        lines = None
    if lines is None or any(ln not in _VALID for ln in lines):
        log.log("WARNING", f"pgpool_status file \"{path}\" is corrupted; ignoring it",
                detail="all backend nodes are assumed to be up")
        return None
    states = lines[:num_backends] + ["up"] * max(0, num_backends - len(lines))
    if not any(s == "up" for s in states):
        return None
    return states


def write_status_file(path: str, states: list[str]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(s + "\n" for s in states))
    os.replace(tmp, path)
