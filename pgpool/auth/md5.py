"""PostgreSQL md5 password hashing: stored hashes, salted challenge responses and their checks.

PostgreSQL stores an md5 password as ``"md5" + md5hex(password + user)``; the challenge response a
client sends to AuthenticationMD5Password is ``"md5" + md5hex(md5hex(password + user) + salt)``.
"""

import hashlib
import hmac

MD5_PREFIX = "md5"
MD5_HASH_LEN = len(MD5_PREFIX) + 32      # "md5" + 32 hex digits
SALT_LEN = 4


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def md5_hex(data: str | bytes) -> str:
    """Lowercase hex md5 digest of ``data`` (str is UTF-8 encoded)."""
    return hashlib.md5(_bytes(data)).hexdigest()


def is_md5_hash(secret: str) -> bool:
    """True for a stored md5 password: ``md5`` followed by 32 characters (pgpool-II's rule)."""
    return secret.startswith(MD5_PREFIX) and len(secret) == MD5_HASH_LEN


def encrypt_password(password: str | bytes, user: str | bytes) -> str:
    """The stored form of ``password`` for ``user``: ``md5`` + md5hex(password + user)."""
    return MD5_PREFIX + md5_hex(_bytes(password) + _bytes(user))


def salted_response_from_hash(md5_hash: str, salt: bytes) -> str:
    """The response to AuthenticationMD5Password computed from a stored ``md5...`` hash."""
    if not is_md5_hash(md5_hash):
        raise ValueError("not an md5 password hash")
    if len(salt) != SALT_LEN:
        raise ValueError(f"md5 salt must be {SALT_LEN} bytes")
    return MD5_PREFIX + md5_hex(md5_hash[len(MD5_PREFIX):].encode() + salt)


def salted_response(user: str | bytes, password: str | bytes, salt: bytes) -> str:
    """The response to AuthenticationMD5Password for a plain password, or for a stored md5 hash
    (a password that already is ``md5`` + 32 characters is used as the hash, as libpq and pgpool do)."""
    secret = password.decode() if isinstance(password, bytes) else password
    md5_hash = secret if is_md5_hash(secret) else encrypt_password(password, user)
    return salted_response_from_hash(md5_hash, salt)


def verify_salted_response(response: str | bytes, stored: str, user: str | bytes, salt: bytes) -> bool:
    """Check a client's md5 response against ``stored`` (an ``md5...`` hash or a plain password)."""
    expected = salted_response(user, stored, salt)
    return hmac.compare_digest(_bytes(response), expected.encode())


def verify_plain_password(password: str | bytes, stored: str, user: str | bytes) -> bool:
    """Check a cleartext ``password`` against ``stored`` (an ``md5...`` hash or a plain password)."""
    if is_md5_hash(stored):
        return hmac.compare_digest(encrypt_password(password, user).encode(), stored.encode())
    return hmac.compare_digest(_bytes(password), stored.encode())
