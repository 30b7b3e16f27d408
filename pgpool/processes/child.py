"""The one way a forked child ends: run its body and _exit with its code, never return to the parent's loop."""

import os

from pgpool import log


def run_child(body, *, what: str, failure_code: int = 1, level: str = "WARNING"):
    """Run body() in a freshly forked child and os._exit with its result.

    SystemExit keeps its code; any other exception is logged once (`what` failed) and the child
    exits with `failure_code`. Never returns."""
    code = failure_code
    try:
        code = body()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # noqa: BLE001 - a child must never return into the parent's loop
        try:
            log.log(level, f"{what} failed: {e.__class__.__name__}: {e}")
        except Exception:   # noqa: BLE001 - logging itself failed; exit anyway
            pass
        code = failure_code
    finally:
        os._exit(code)
