"""PAM authentication (pool_hba.conf method ``pam``) through python-pam, imported on first use.

As pgpool-II (src/auth/pool_hba.c CheckPAMAuth): the service is the line's ``pamservice`` option
(default ``pgpool``), the user is the connecting user, the client's cleartext password answers
PAM's prompt, then the account is checked (pam_acct_mgmt); credentials are not established.  A
service without a configuration file would silently fall back to PAM's ``other`` service, so it
is refused here with a clear error instead.
"""

from __future__ import annotations

import importlib
import os

PAM_DIRS = ("/etc/pam.d", "/usr/lib/pam.d", "/lib/pam.d", "/usr/share/pam.d")
PAM_CONF = "/etc/pam.conf"
FAILURE = "failed authentication against PAM"
INVALID_PASSWORD = "28P01"
INVALID_AUTHORIZATION = "28000"
FEATURE_NOT_SUPPORTED = "0A000"


class PamError(Exception):
    """PAM refused the user (or could not be used); PostgreSQL-style message, detail, SQLSTATE."""

    def __init__(self, message: str, detail: str, sqlstate: str, hint: str | None = None):
        super().__init__(f"{message}: {detail}")
        self.message, self.detail, self.sqlstate, self.hint = message, detail, sqlstate, hint


def _in_pam_conf(service: str, path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return any(line.split()[:1] == [service] for line in fh if not line.lstrip().startswith("#"))
    except OSError:
        return False


def check_service(service: str, dirs=PAM_DIRS, pam_conf: str = PAM_CONF) -> None:
    """PamError unless PAM service ``service`` is configured (a file in a PAM directory or a
    line in /etc/pam.conf) and python-pam can be imported."""
    if not service or "/" in service or service in (".", ".."):
        raise PamError(FAILURE, f'invalid PAM service name "{service}"', INVALID_AUTHORIZATION)
    if not (any(os.path.isfile(os.path.join(d, service)) for d in dirs) or _in_pam_conf(service, pam_conf)):
        raise PamError(FAILURE, f'PAM service "{service}" is not configured', INVALID_AUTHORIZATION,
                       f"create {dirs[0]}/{service} (pool_hba.conf option pamservice names the service)")
    try:
        importlib.import_module("pam")            # python-pam
    except ImportError as exc:
        raise PamError(FAILURE, f"PAM support is not available: the python-pam module cannot be imported ({exc})",
                       FEATURE_NOT_SUPPORTED, "install python-pam") from None


def authenticate(user: str, password: str, service: str) -> None:
    """Check ``user``'s ``password`` with PAM service ``service``; PamError when refused."""
    if not password:
        raise PamError(FAILURE, "empty password returned by client", INVALID_PASSWORD)
    import pam
    authenticator = pam.PamAuthenticator()
    try:
        ok = authenticator.authenticate(user, password, service=service, resetcreds=False)
    except ValueError as exc:                  # a NUL in the user name or password
        raise PamError(FAILURE, f"pam_authenticate failed: {exc}", INVALID_PASSWORD) from None
    if not ok:
        reason = authenticator.reason
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PamError(FAILURE, f"pam_authenticate failed: {reason}", INVALID_PASSWORD)
