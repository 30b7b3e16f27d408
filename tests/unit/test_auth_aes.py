"""AES pool_passwd passwords: key derivation, encryption, the key file, and pool_passwd's use of them.

The expected values were produced by pgpool-II 4.3.5's /usr/sbin/pg_enc; the interoperability
tests run it when it is installed.
"""

import hashlib
import os
import subprocess

import pytest

from pgpool.auth import aes
from pgpool.auth import pool_passwd as pp

REAL_PG_ENC = "/usr/sbin/pg_enc"
needs_real = pytest.mark.skipif(not os.path.exists(REAL_PG_ENC), reason="pgpool-II's pg_enc is not installed")

# (password, key, pool_passwd string made by pgpool-II's pg_enc)
KNOWN = [
    ("foo", "secretkey", "AESsbPRgNtGiwnkzYmhYORmUw=="),
    ("foo", "abc", "AES76vlTR/PoIu7yxS6o3M/Eg=="),
    ("a", "secretkey", "AES8IARq1U878NXfTM5xpnTFg=="),
    ("foo", "", "AESoCBJ9ahcVnyApiWiSAW6Tw=="),            # an empty key line is a key too
]


@pytest.mark.parametrize("password, key, stored", KNOWN)
def test_known_values(password, key, stored):
    assert aes.encrypt_password(password, key) == stored
    assert aes.decrypt_password(stored, key) == password


def test_key_derivation_is_evp_bytes_to_key_sha1():
    key, iv = aes.derive_key_iv(b"pw")
    d1 = hashlib.sha1(b"pw").digest()
    d2 = hashlib.sha1(d1 + b"pw").digest()
    d3 = hashlib.sha1(d2 + b"pw").digest()
    assert (key, iv) == ((d1 + d2 + d3)[:32], (d1 + d2 + d3)[32:48])


@pytest.mark.parametrize("password", ["", "x", "a" * 15, "b" * 16, "c" * 17, "p\u00e4ss w\u00f6rd:\\", "z" * 128])
def test_round_trip_and_padding(password):
    stored = aes.encrypt_password(password, "k\u00eay")
    raw = aes.base64.b64decode(stored[3:])
    assert len(raw) == (len(password.encode()) // 16 + 1) * 16      # PKCS#7 always adds a block part
    assert aes.decrypt_password(stored, "k\u00eay") == password


def test_c_strings_end_at_nul():
    assert aes.encrypt_password("foo\0bar", "secretkey\0ignored") == KNOWN[0][2]


@pytest.mark.parametrize("stored, key, message", [
    ("AESsbPRgNtGiwnkzYmhYORmUw==", "wrongkey", "decryption failed"),
    ("AES" + aes.base64.b64encode(b"short").decode(), "secretkey", "decryption failed"),
    ("AES!!!notbase64", "secretkey", "base64 decoding failed"),
    ("AES", "secretkey", "base64 decoding failed"),
])
def test_decrypt_failures(stored, key, message):
    with pytest.raises(aes.AesError, match=message):
        aes.decrypt_password(stored, key)


def test_whitespace_inside_base64_is_ignored():
    assert aes.decrypt_password("AESsbPRgNtGi wnkzYmhYORmUw==\r", "secretkey") == "foo"


# ---- key file ---------------------------------------------------------------------------------

@pytest.mark.parametrize("content, key", [
    (b"secretkey\n", b"secretkey"),
    (b"secretkey", b"secretkey"),
    (b"first\nsecond\n", b"first"),
    (b"\n", b""),
    (b"", None),
    (b"with\r\n", b"with\r"),
    (b"k" * 300 + b"\n", b"k" * 255),                 # fgets into 256 bytes
])
def test_read_key_file(tmp_path, content, key):
    path = tmp_path / "key"
    path.write_bytes(content)
    path.chmod(0o600)
    found = aes.read_key_file(str(path))
    assert (found.key, found.warnings) == (key, [])


def test_key_file_problems(tmp_path):
    loose = tmp_path / "loose"
    loose.write_text("k\n")
    loose.chmod(0o644)
    found = aes.read_key_file(str(loose))
    assert found.key == b"k"
    assert found.warnings == [f'pool key file "{loose}" has group or world access; '
                              "permissions should be u=rw (0600) or less"]
    found = aes.read_key_file(str(tmp_path))
    assert (found.key, found.warnings) == (None, [f'pool key file "{tmp_path}" is not a plain file'])
    assert aes.read_key_file(str(tmp_path / "missing")).key is None
    assert aes.read_key_file("").key is None


@pytest.mark.parametrize("environ, home, expected", [
    ({"PGPOOLKEYFILE": "/etc/key"}, "/home/u", "/etc/key"),
    ({"PGPOOLKEYFILE": ""}, "/home/u", ""),
    ({}, "/home/u", "/home/u/.pgpoolkey"),
])
def test_default_key_file(environ, home, expected):
    assert aes.default_key_file(environ, home) == expected


# ---- pool_passwd ------------------------------------------------------------------------------

@pytest.fixture
def key_file(tmp_path, monkeypatch):
    """A key file holding "secretkey", made the pgpool key; the module state is restored after."""
    monkeypatch.setattr(pp, "_key_file", None)
    path = tmp_path / "pgpoolkey"
    path.write_text("secretkey\n")
    path.chmod(0o600)
    pp.set_key_file(str(path))
    return path


def test_plain_password_decrypts(key_file):
    assert pp.password_type(KNOWN[0][2]) is pp.PasswordType.AES
    assert pp.plain_password(KNOWN[0][2]) == "foo"
    with pytest.raises(pp.UnsupportedPasswordError, match="decryption failed"):
        pp.plain_password(KNOWN[1][2])                      # made with another key


def test_lookup_returns_decrypted_entries(key_file, tmp_path, capfd):
    path = tmp_path / "pool_passwd"
    path.write_text(f"alice:{KNOWN[0][2]}\nbob:{KNOWN[1][2]}\ncarol:{KNOWN[2][2]}:bcarol:{KNOWN[0][2]}\n"
                    "dave:TEXTplain\n")
    passwd = pp.PoolPasswd(path)
    assert passwd.lookup("alice") == pp.PasswordEntry("alice", "TEXTfoo")
    assert passwd.lookup("alice").plain_password() == "foo"
    assert passwd.lookup("carol") == pp.PasswordEntry("carol", "TEXTa", "bcarol", "TEXTfoo")
    assert passwd.lookup("dave") == pp.PasswordEntry("dave", "TEXTplain")
    capfd.readouterr()
    assert passwd.lookup("bob") is None                     # wrong key: unusable, logged once
    err = capfd.readouterr().err
    assert err.count("WARNING:") == 1
    assert 'unable to decrypt password from pool_passwd for user "bob"' in err
    assert "decryption failed" in err and "verify the valid pool_key exists" in err
    assert pp.config_user_password("alice", "", passwd) == "foo"
    assert pp.config_user_password("x", KNOWN[2][2], passwd) == "a"         # AES in pgpool.conf
    assert pp.config_user_password("x", KNOWN[1][2], passwd) is None
    assert "could not get the password for user:x" in capfd.readouterr().err


def test_without_key(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(pp, "_key_file", None)
    missing = tmp_path / "nokey"
    monkeypatch.setenv("PGPOOLKEYFILE", str(missing))       # found on first use, like pgpool-II
    path = tmp_path / "pool_passwd"
    path.write_text(f"alice:{KNOWN[0][2]}\n")
    assert pp.PoolPasswd(path).lookup("alice") is None
    err = capfd.readouterr().err
    assert f'no pool key: key file "{missing}" is missing, empty or unreadable' in err
    assert pp.pool_key() is None


def test_set_key_file_search_order(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(pp, "_key_file", None)
    (tmp_path / "env").write_text("fromenv\n")
    (tmp_path / "arg").write_text("fromarg\n")
    os.chmod(tmp_path / "env", 0o600)
    os.chmod(tmp_path / "arg", 0o644)
    monkeypatch.setenv("PGPOOLKEYFILE", str(tmp_path / "env"))
    assert pp.set_key_file(None).key == b"fromenv"
    assert pp.set_key_file("").key == b"fromenv"
    assert pp.set_key_file(str(tmp_path / "arg")).key == b"fromarg"
    assert pp.pool_key() == b"fromarg"
    assert "has group or world access" in capfd.readouterr().err
    monkeypatch.delenv("PGPOOLKEYFILE")
    assert pp.set_key_file(None).path == os.path.join(aes.home_directory(), ".pgpoolkey")


@needs_real
def test_real_pg_enc_entries_decrypt_and_ours_match(tmp_path):
    key = tmp_path / "key"
    key.write_text("Sh4red key with spaces\n")
    key.chmod(0o600)
    for password in ["x", "p\u00e4ss:w\u00f6rd", "sixteen chars!!!", "y" * 128]:
        out = subprocess.run([REAL_PG_ENC, "-k", str(key), password], capture_output=True, text=True,
                             check=True).stdout
        stored = out.split("pool_passwd string: ")[1].strip()
        assert aes.decrypt_password(stored, "Sh4red key with spaces") == password
        assert aes.encrypt_password(password, "Sh4red key with spaces") == stored
