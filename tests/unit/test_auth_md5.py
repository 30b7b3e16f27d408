"""md5 password hashing: PostgreSQL's stored form, salted responses and their verification."""

import hashlib

import pytest

from pgpool.auth import md5

SALT = b"\x01\x02\x03\x04"


@pytest.mark.parametrize("data, digest", [
    ("", "d41d8cd98f00b204e9800998ecf8427e"),
    ("foo", "acbd18db4cc2f85cedef654fccc4a4d8"),             # /usr/sbin/pg_md5 foo
    (b"The quick brown fox jumps over the lazy dog", "9e107d9d372bb6826bd81d3542a419d6"),
])
def test_md5_hex_vectors(data, digest):
    assert md5.md5_hex(data) == digest


@pytest.mark.parametrize("password, user, stored", [
    # produced by the real `pg_md5 -m -u alice secret` and `SELECT 'md5' || md5('secret' || 'alice')`
    ("secret", "alice", "md54a0a68b43b6cd5cf266fa02f196e2371"),
    ("secret3", "alice", "md54c3e83040e78e53d694d93d76ac6080e"),
    ("pw1", "bob", "md55ed6e3ca8841f5876f246a7cde3824fd"),
])
def test_encrypt_password_vectors(password, user, stored):
    assert md5.encrypt_password(password, user) == stored
    assert md5.is_md5_hash(stored)


@pytest.mark.parametrize("secret, expected", [
    ("md5" + "0" * 32, True),
    ("md5" + "0" * 31, False),
    ("MD5" + "0" * 32, False),
    ("plain", False),
])
def test_is_md5_hash(secret, expected):
    assert md5.is_md5_hash(secret) is expected


def test_salted_response_formula():
    inner = hashlib.md5(b"secretalice").hexdigest()
    expected = "md5" + hashlib.md5(inner.encode() + SALT).hexdigest()
    assert md5.salted_response("alice", "secret", SALT) == expected
    assert md5.salted_response("alice", md5.encrypt_password("secret", "alice"), SALT) == expected
    assert md5.salted_response_from_hash(md5.encrypt_password("secret", "alice"), SALT) == expected


def test_salted_response_rejects_bad_input():
    with pytest.raises(ValueError):
        md5.salted_response_from_hash("plain", SALT)
    with pytest.raises(ValueError):
        md5.salted_response_from_hash("md5" + "a" * 32, b"\x00")


@pytest.mark.parametrize("stored", ["secret", "md54a0a68b43b6cd5cf266fa02f196e2371"])
def test_verify_salted_response(stored):
    good = md5.salted_response("alice", "secret", SALT)
    assert md5.verify_salted_response(good, stored, "alice", SALT)
    assert md5.verify_salted_response(good.encode(), stored, "alice", SALT)
    assert not md5.verify_salted_response(md5.salted_response("alice", "wrong", SALT), stored, "alice", SALT)
    assert not md5.verify_salted_response(good, stored, "alice", b"\x04\x03\x02\x01")


def test_verify_salted_response_plain_uses_user():
    good = md5.salted_response("alice", "secret", SALT)
    assert not md5.verify_salted_response(good, "secret", "bob", SALT)


@pytest.mark.parametrize("stored", ["secret", "md54a0a68b43b6cd5cf266fa02f196e2371"])
def test_verify_plain_password(stored):
    assert md5.verify_plain_password("secret", stored, "alice")
    assert not md5.verify_plain_password("Secret", stored, "alice")
