"""pool_passwd: the file of user passwords pgpool-II authenticates clients and itself with.

Each line is ``user:password`` (optionally ``:backend_user:backend_password``); a backslash escapes
the next character, so ``\\:`` is a colon inside a field.  The password is an md5 hash
(``md5`` + 32 characters), a SCRAM verifier (``SCRAM-SHA-256$...``), ``TEXT`` + a plain password,
``AES`` + an encrypted one (not supported yet), or else a plain password.  The first line for a
user wins.  The file is re-read when it changes, like pgpool-II, which reads it on every lookup.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from pgpool.auth.md5 import MD5_PREFIX, is_md5_hash
from pgpool.auth.scram import VERIFIER_PREFIX

AES_PREFIX = "AES"
TEXT_PREFIX = "TEXT"
AES_NOT_SUPPORTED = "AES encrypted passwords are not supported yet"


class PasswordType(enum.Enum):
    PLAINTEXT = "plaintext"
    TEXT_PREFIXED = "text"
    MD5 = "md5"
    SCRAM_SHA_256 = "scram-sha-256"
    AES = "aes"


class UnsupportedPasswordError(Exception):
    """The entry holds a password kind this implementation cannot use yet (AES)."""


# Checked in order, as pgpool-II's get_password_type(); a password matching none is plain text.
_TYPE_BY_PREFIX = (
    (MD5_PREFIX, lambda s: PasswordType.MD5 if is_md5_hash(s) else PasswordType.PLAINTEXT),
    (AES_PREFIX, lambda s: PasswordType.AES),
    (VERIFIER_PREFIX, lambda s: PasswordType.SCRAM_SHA_256),
    (TEXT_PREFIX, lambda s: PasswordType.TEXT_PREFIXED),
)


def password_type(secret: str) -> PasswordType:
    """Classify a stored password (pool_passwd entry or a password setting in pgpool.conf)."""
    for prefix, kind in _TYPE_BY_PREFIX:
        if secret.startswith(prefix):
            return kind(secret)
    return PasswordType.PLAINTEXT


def plain_password(secret: str) -> str | None:
    """The cleartext a stored password reveals: plain or ``TEXT``-prefixed -> the password,
    md5 / SCRAM -> None; AES -> UnsupportedPasswordError."""
    kind = password_type(secret)
    if kind is PasswordType.AES:
        raise UnsupportedPasswordError(AES_NOT_SUPPORTED)
    if kind is PasswordType.TEXT_PREFIXED:
        return secret[len(TEXT_PREFIX):]
    return secret if kind is PasswordType.PLAINTEXT else None


@dataclass(frozen=True)
class PasswordEntry:
    """One pool_passwd line."""

    user: str
    password: str
    backend_user: str | None = None
    backend_password: str | None = None

    @property
    def type(self) -> PasswordType:
        return password_type(self.password)

    def plain_password(self) -> str | None:
        return plain_password(self.password)


def split_fields(line: str) -> list[str]:
    """Split a pool_passwd line at unescaped colons, removing the escaping backslashes."""
    fields, current, escaped = [], [], False
    for ch in line:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
    fields.append("".join(current))
    return fields


def parse_line(line: str) -> PasswordEntry | None:
    """The entry a line holds, or None for a line without a user and a password.

    A SCRAM verifier has two colons of its own (``SCRAM-SHA-256$<iter>:<salt>$<key>:<key>``);
    written unescaped, its three pieces are joined back (pgpool-II would split them apart)."""
    fields = split_fields(line.rstrip("\r\n"))
    if len(fields) >= 4 and fields[1].startswith(VERIFIER_PREFIX) and ":" not in fields[1]:
        fields = [fields[0], ":".join(fields[1:4]), *fields[4:]]
    if len(fields) < 2 or not fields[0] or not fields[1]:
        return None
    backend_user, backend_password = (fields[2], fields[3]) if len(fields) >= 4 and fields[2] and fields[3] \
        else (None, None)
    return PasswordEntry(fields[0], fields[1], backend_user, backend_password)


def parse_text(text: str) -> dict[str, PasswordEntry]:
    """Entries of a pool_passwd file's text, by user (the first line for a user wins)."""
    entries: dict[str, PasswordEntry] = {}
    for line in text.splitlines():
        entry = parse_line(line)
        if entry is not None:
            entries.setdefault(entry.user, entry)
    return entries


class PoolPasswd:
    """A pool_passwd file; lookups see changes to the file without a reload."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._stamp: tuple[int, int, int] | None = None
        self._entries: dict[str, PasswordEntry] = {}

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._entries = None, {}
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            with open(self.path, encoding="utf-8", errors="surrogateescape") as fh:
                self._entries = parse_text(fh.read())
            self._stamp = stamp

    def lookup(self, user: str) -> PasswordEntry | None:
        self._refresh()
        return self._entries.get(user)

    def users(self) -> list[str]:
        self._refresh()
        return list(self._entries)


def _escape(user: str) -> str:
    return user.replace("\\", "\\\\").replace(":", "\\:")


def update_entry(path: str | os.PathLike, user: str, password: str) -> None:
    """Set ``user``'s password in the file (creating it), keeping every other line as it was."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines(keepends=True)
    except FileNotFoundError:
        lines = []
    new_line = f"{_escape(user)}:{_escape(password)}\n"
    for i, line in enumerate(lines):
        entry = parse_line(line)
        if entry is not None and entry.user == user:
            lines[i] = new_line
            break
    else:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(new_line)
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write("".join(lines))


def config_user_password(user: str, password_in_config: str, passwd: PoolPasswd | None) -> str | None:
    """The password pgpool uses to log in as ``user`` for health checks, streaming-replication
    checks and the like (pgpool-II's get_pgpool_config_user_password): the setting's value, or
    the pool_passwd entry when the setting is empty; returned as plain text or an md5 hash,
    None when neither is available.  AES -> UnsupportedPasswordError."""
    secret = password_in_config
    if not secret:
        entry = passwd.lookup(user) if passwd is not None else None
        if entry is None:
            return None
        secret = entry.password
    if password_type(secret) is PasswordType.MD5:
        return secret
    return plain_password(secret)
