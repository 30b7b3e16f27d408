"""AES-256 encrypted passwords as pgpool-II stores them (``AES`` + base64), and the pgpool key file.

pgpool-II derives the AES-256-CBC key and IV from the key string with OpenSSL's
``EVP_BytesToKey(aes-256-cbc, sha1, no salt, 1 round)`` and pads with PKCS#7; the entry is
``AES`` + standard base64 of the ciphertext.  Passwords and keys are C strings there: they end at
the first NUL byte.  The key is the first line of a key file (``-k``, else ``$PGPOOLKEYFILE``,
else ``~/.pgpoolkey`` of the effective user), at most 255 bytes, without its newline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import pwd
import stat
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

AES_PREFIX = "AES"
KEY_FILE_NAME = ".pgpoolkey"
KEY_FILE_ENV = "PGPOOLKEYFILE"
MAX_KEY_LEN = 256                 # pgpool-II's MAX_POOL_KEY_LEN; a key line holds at most 255 bytes
KEY_LEN, IV_LEN, BLOCK_BITS = 32, 16, 128


class AesError(ValueError):
    """An encrypted password that does not decrypt; the message is pgpool-II's wording."""


def _c_string(data: bytes) -> bytes:
    return data.split(b"\0", 1)[0]


def derive_key_iv(passphrase: bytes) -> tuple[bytes, bytes]:
    """EVP_BytesToKey with SHA-1, no salt and one round: D1 = H(p), Di = H(Di-1 + p)."""
    derived, block = b"", b""
    while len(derived) < KEY_LEN + IV_LEN:
        block = hashlib.sha1(block + passphrase).digest()
        derived += block
    return derived[:KEY_LEN], derived[KEY_LEN:KEY_LEN + IV_LEN]


def _cipher(passphrase: bytes) -> Cipher:
    key, iv = derive_key_iv(_c_string(passphrase))
    return Cipher(algorithms.AES(key), modes.CBC(iv))


def encrypt(plaintext: bytes, passphrase: bytes) -> bytes:
    """AES-256-CBC with PKCS#7 padding, key and IV derived from ``passphrase``."""
    padder = padding.PKCS7(BLOCK_BITS).padder()
    encryptor = _cipher(passphrase).encryptor()
    return encryptor.update(padder.update(_c_string(plaintext)) + padder.finalize()) + encryptor.finalize()


def decrypt(ciphertext: bytes, passphrase: bytes) -> bytes:
    """The plaintext of ``ciphertext``; AesError("decryption failed") for a wrong key or bad data."""
    if not ciphertext or len(ciphertext) % (BLOCK_BITS // 8):
        raise AesError("decryption failed")
    decryptor = _cipher(passphrase).decryptor()
    unpadder = padding.PKCS7(BLOCK_BITS).unpadder()
    try:
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise AesError("decryption failed") from None


def encrypt_password(password: str | bytes, key: str | bytes) -> str:
    """The pool_passwd form of ``password``: ``AES`` + base64(AES-256-CBC(password))."""
    return AES_PREFIX + base64.b64encode(encrypt(_bytes(password), _bytes(key))).decode("ascii")


def decrypt_password(stored: str, key: str | bytes) -> str:
    """The cleartext of an ``AES...`` entry; AesError with pgpool-II's message when it fails."""
    encoded = "".join(stored.removeprefix(AES_PREFIX).split())
    try:
        ciphertext = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise AesError("base64 decoding failed") from None
    if not ciphertext:
        raise AesError("base64 decoding failed")
    plain = _c_string(decrypt(ciphertext, _bytes(key)))
    return plain.decode("utf-8", "surrogateescape")


def _bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")


# ---- the key file --------------------------------------------------------------------------------

def home_directory() -> str | None:
    """The effective user's home directory from the password database (pgpool-II ignores $HOME)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        return None


def default_key_file(environ: dict[str, str] | os._Environ = os.environ, home: str | None = None) -> str | None:
    """``$PGPOOLKEYFILE`` when set, else ``<home>/.pgpoolkey``; None without a home directory."""
    if KEY_FILE_ENV in environ:
        return environ[KEY_FILE_ENV]
    home = home if home is not None else home_directory()
    return None if home is None else f"{home}/{KEY_FILE_NAME}"


@dataclass
class KeyFile:
    """What reading a key file found: the key (None when there is none) and warnings to report."""

    path: str
    key: bytes | None = None
    warnings: list[str] = field(default_factory=list)


def read_key_file(path: str) -> KeyFile:
    """Read the key as pgpool-II's read_pool_key: a missing or unreadable file gives no key and no
    warning; a non-regular file gives a warning and no key; group/world access only a warning."""
    result = KeyFile(path)
    if not path:
        return result
    try:
        fd = os.open(path, os.O_RDONLY)   # opened before the checks, as pgpool-II does (and a directory opens)
    except OSError:
        return result
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        result.warnings.append(f'pool key file "{path}" is not a plain file')
        return result
    with open(fd, "rb") as fh:
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            result.warnings.append(f'pool key file "{path}" has group or world access; '
                                   "permissions should be u=rw (0600) or less")
        line = fh.readline(MAX_KEY_LEN - 1)
    if line:
        result.key = _c_string(line.removesuffix(b"\n"))
    return result
