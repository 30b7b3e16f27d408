"""pool_passwd: the file of user passwords pgpool-II authenticates clients and itself with.

Each line is ``user:password`` (optionally ``:backend_user:backend_password``); a backslash escapes
the next character, so ``\\:`` is a colon inside a field.  The password is an md5 hash
(``md5`` + 32 characters), a SCRAM verifier (``SCRAM-SHA-256$...``), ``TEXT`` + a plain password,
``AES`` + an AES-256 encrypted one (see :mod:`pgpool.auth.aes`), or else a plain password.  The
first line for a user wins.  The file is re-read when it changes, like pgpool-II, which reads it on
every lookup.

AES passwords are decrypted with the pgpool key, read once at startup like pgpool-II does
(:func:`set_key_file`: ``pgpool -k FILE``, else ``$PGPOOLKEYFILE``, else ``~/.pgpoolkey``; read on
first use when nobody called it).  A lookup returns an AES entry decrypted (as ``TEXT`` + the
cleartext); one that does not decrypt is logged and treated as absent, so the login fails with
pgpool's usual "no pool_passwd entry" error instead of using a password nobody can check.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from pgpool import log
from pgpool.auth import aes
from pgpool.auth.aes import AES_PREFIX
from pgpool.auth.md5 import MD5_PREFIX, is_md5_hash
from pgpool.auth.scram import VERIFIER_PREFIX

TEXT_PREFIX = "TEXT"
# The detail and hint of every "could not decrypt" error (pgpool-II's wording).
AES_DECRYPT_FAILED = "unable to decrypt password from pool_passwd"
KEY_HINT = "verify the valid pool_key exists"


class PasswordType(enum.Enum):
    PLAINTEXT = "plaintext"
    TEXT_PREFIXED = "text"
    MD5 = "md5"
    SCRAM_SHA_256 = "scram-sha-256"
    AES = "aes"


class UnsupportedPasswordError(Exception):
    """An AES password that cannot be decrypted (no pgpool key, a wrong key, damaged data);
    the message says why."""


# The pgpool key: None until set_key_file() ran (explicitly at startup, or on first use).
_key_file: aes.KeyFile | None = None


def set_key_file(path: str | None = None) -> aes.KeyFile:
    """Read the pgpool key now, from ``path`` (``pgpool -k``) or, when that is empty, from
    ``$PGPOOLKEYFILE`` or ``~/.pgpoolkey``; the key file's warnings are logged.  A relative path
    is relative to the current directory, so call this before daemonizing."""
    global _key_file
    _key_file = aes.read_key_file(path or aes.default_key_file() or "")
    for warning in _key_file.warnings:
        log.warning(warning)
    return _key_file


def pool_key() -> bytes | None:
    """The pgpool key (None when there is none)."""
    return (_key_file or set_key_file()).key


def decrypt(secret: str) -> str:
    """The cleartext of an ``AES...`` password; UnsupportedPasswordError saying why it failed."""
    key = pool_key()
    if key is None:
        raise UnsupportedPasswordError(f'no pool key: key file "{_key_file.path}" is missing, empty or unreadable')
    try:
        return aes.decrypt_password(secret, key)
    except aes.AesError as exc:
        raise UnsupportedPasswordError(f"{exc} (wrong pool key or damaged entry)") from None


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
    AES -> decrypted (UnsupportedPasswordError when that fails), md5 / SCRAM -> None."""
    kind = password_type(secret)
    if kind is PasswordType.AES:
        return decrypt(secret)
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

    def decrypted(self) -> PasswordEntry:
        """This entry with AES passwords replaced by ``TEXT`` + their cleartext
        (UnsupportedPasswordError when one does not decrypt)."""
        def clear(secret: str | None) -> str | None:
            if secret is None or password_type(secret) is not PasswordType.AES:
                return secret
            return TEXT_PREFIX + decrypt(secret)
        password, backend_password = clear(self.password), clear(self.backend_password)
        if password is self.password and backend_password is self.backend_password:
            return self
        return PasswordEntry(self.user, password, self.backend_user, backend_password)


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
        """``user``'s entry, AES passwords decrypted; None when there is none or it does not
        decrypt (logged as a WARNING)."""
        self._refresh()
        entry = self._entries.get(user)
        if entry is None:
            return None
        try:
            return entry.decrypted()
        except UnsupportedPasswordError as exc:
            log.warning(f'{AES_DECRYPT_FAILED} for user "{user}"', detail=str(exc), hint=KEY_HINT)
            return None

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
    the pool_passwd entry when the setting is empty; returned as plain text (AES decrypted) or an
    md5 hash, None when neither is available or an AES password does not decrypt (logged)."""
    secret = password_in_config
    if not secret:
        entry = passwd.lookup(user) if passwd is not None else None
        if entry is None:
            return None
        secret = entry.password
    if password_type(secret) is PasswordType.MD5:
        return secret
    try:
        return plain_password(secret)
    except UnsupportedPasswordError as exc:
        log.warning(f"could not get the password for user:{user}", detail=f"{AES_DECRYPT_FAILED}: {exc}",
                    hint=KEY_HINT)
        return None
