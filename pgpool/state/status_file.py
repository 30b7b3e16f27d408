"""The pgpool_status file: one line per backend (up / down / unused), kept across restarts.

Read tolerantly, as pgpool-II 4.3 does: words are matched case-insensitively, a file in which no
line says up is ignored (every node is assumed up), and nodes without a line count as up.  A file that
cannot be understood (garbage, a line cut short) is reported with a WARNING naming it and ignored:
every node starts up.  pgpool-II's older binary format is not read (it predates 3.4).
"""

import os

from pgpool import log

_VALID = ("up", "down", "unused")
MAX_BYTES = 65536


def read_status_file(path: str, num_backends: int) -> list[str] | None:
    """Saved states by node id ("up" / "down" / "unused"), or None when there is no usable file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES)
    except FileNotFoundError:
        log.log("LOG", f"Backend status file {path} does not exist")
        return None
    except OSError as e:
        log.log("WARNING", f"could not read backend status file \"{path}\": {e.strerror}",
                detail="all backend nodes are assumed to be up")
        return None
    try:
        lines = [ln.strip().lower() for ln in raw.decode("ascii").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        lines = None
    bad = None if lines is None else next(((i, ln) for i, ln in enumerate(lines) if ln not in _VALID), None)
    if lines is None or bad is not None or not lines:
        what = ("the file is empty" if lines == [] else f'backend:{bad[0]} status is invalid: "{bad[1]}"'
                if bad else "the file is not text")
        log.log("WARNING", f"invalid data in backend status file \"{path}\", ignoring it",
                detail=f"{what}; all backend nodes are assumed to be up")
        return None
    if "up" not in lines[:num_backends]:
        return None
    states = lines[:num_backends] + ["up"] * max(0, num_backends - len(lines))
    for node, state in enumerate(states):
        if state == "down":
            log.log("LOG", f"reading status file: {node} th backend is set to down status")
    return states


def discard_status_file(path: str) -> None:
    """pgpool -D: remove the file so that no saved state is restored."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as e:
        log.log("WARNING", f"failed to discard backend status file: \"{path}\"", detail=e.strerror)
        return
    log.log("LOG", f"Backend status file {path} discarded")


def write_status_file(path: str, states: list[str]) -> None:
    """Replace the file atomically with one line per state (OSError on failure)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(s + "\n" for s in states))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
