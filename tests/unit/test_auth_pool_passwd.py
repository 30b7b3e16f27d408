"""pool_passwd: line format, password kinds, lookups that follow file changes, updates."""

import os

import pytest

from pgpool.auth import pool_passwd as pp

MD5 = "md54a0a68b43b6cd5cf266fa02f196e2371"
SCRAM = ("SCRAM-SHA-256$4096:xCe1x01U2McBd8XSaWdepg==$"
         "jJidkb5SlmDS9rgxfWz/CQXDDn38H8MLC0Xsvjb7x3M=:bHLQyo0gao/pSf5MXAzcPav9auU8Zv6aN7jiOKzYzfk=")


@pytest.mark.parametrize("secret, kind, plain", [
    (MD5, pp.PasswordType.MD5, None),
    ("md5short", pp.PasswordType.PLAINTEXT, "md5short"),       # md5 prefix but not 35 chars: plain
    (SCRAM, pp.PasswordType.SCRAM_SHA_256, None),
    ("TEXTsecret", pp.PasswordType.TEXT_PREFIXED, "secret"),
    ("TEXT", pp.PasswordType.TEXT_PREFIXED, ""),
    ("secret", pp.PasswordType.PLAINTEXT, "secret"),
    ("text-lowercase", pp.PasswordType.PLAINTEXT, "text-lowercase"),
])
def test_password_types(secret, kind, plain):
    assert pp.password_type(secret) is kind
    assert pp.plain_password(secret) == plain


def test_aes_is_recognised_and_refused_clearly_when_it_does_not_decrypt():
    assert pp.password_type("AESabc==") is pp.PasswordType.AES
    with pytest.raises(pp.UnsupportedPasswordError):       # no key, or not a real entry (tests/unit/test_auth_aes.py)
        pp.plain_password("AESabc==")


@pytest.mark.parametrize("line, entry", [
    ("alice:" + MD5, pp.PasswordEntry("alice", MD5)),
    ("bob:TEXTpw\r\n", pp.PasswordEntry("bob", "TEXTpw")),
    ("carol:pw:backend_carol:bpw", pp.PasswordEntry("carol", "pw", "backend_carol", "bpw")),
    ("carol:pw:backend_carol", pp.PasswordEntry("carol", "pw")),      # mapping without password ignored
    (r"we\:ird:pa\:ss\\w", pp.PasswordEntry("we:ird", "pa:ss\\w")),
    ("dave:" + SCRAM, pp.PasswordEntry("dave", SCRAM)),                # its own colons need no escaping
    ("dave:" + SCRAM + ":bdave:bpw", pp.PasswordEntry("dave", SCRAM, "bdave", "bpw")),
    ("dave:" + SCRAM.replace(":", "\\:"), pp.PasswordEntry("dave", SCRAM)),
    ("nopassword:", None),
    ("justuser", None),
    (":pw", None),
    ("", None),
])
def test_parse_line(line, entry):
    assert pp.parse_line(line) == entry


def test_parse_text_first_entry_wins():
    entries = pp.parse_text("a:one\nb:two\na:three\n\ngarbage\n")
    assert entries["a"].password == "one" and entries["b"].password == "two"
    assert set(entries) == {"a", "b"}


def test_lookup_follows_file_changes(tmp_path):
    path = tmp_path / "pool_passwd"
    passwd = pp.PoolPasswd(path)
    assert passwd.lookup("alice") is None                  # missing file: no entries
    path.write_text(f"alice:{MD5}\nbob:TEXTbobpw\n")
    assert passwd.lookup("alice").type is pp.PasswordType.MD5
    assert passwd.lookup("bob").plain_password() == "bobpw"
    assert passwd.lookup("carol") is None
    path.write_text("alice:newpw\n")
    os.utime(path, ns=(1, 1))                              # a rewrite in the same tick is still seen
    assert passwd.lookup("alice").password == "newpw"
    assert passwd.lookup("bob") is None
    assert passwd.users() == ["alice"]


def test_update_entry(tmp_path):
    path = tmp_path / "pool_passwd"
    pp.update_entry(path, "alice", MD5)
    assert path.read_text() == f"alice:{MD5}\n"
    path.write_text(f"# comment-like line\nalice:{MD5}\nbob:pw:mapped:mpw\nalice:second")  # no final newline
    pp.update_entry(path, "alice", "md5" + "1" * 32)
    pp.update_entry(path, "carol", "TEXTc")
    pp.update_entry(path, "we:ird", "x")
    pp.update_entry(path, "eve", "TEXTa:b")
    assert path.read_text() == ("# comment-like line\nalice:md5" + "1" * 32 + "\nbob:pw:mapped:mpw\n"
                                "alice:second\ncarol:TEXTc\nwe\\:ird:x\neve:TEXTa\\:b\n")
    assert pp.PoolPasswd(path).lookup("we:ird").password == "x"
    assert pp.PoolPasswd(path).lookup("eve").plain_password() == "a:b"


def test_config_user_password(tmp_path):
    path = tmp_path / "pool_passwd"
    path.write_text(f"alice:{MD5}\nbob:TEXTbobpw\ncarol:{SCRAM}\ndan:AESxyz\n")
    passwd = pp.PoolPasswd(path)
    assert pp.config_user_password("alice", "", passwd) == MD5
    assert pp.config_user_password("bob", "", passwd) == "bobpw"
    assert pp.config_user_password("carol", "", passwd) is None
    assert pp.config_user_password("nobody", "", passwd) is None
    assert pp.config_user_password("nobody", "", None) is None
    assert pp.config_user_password("alice", "TEXTfromconf", passwd) == "fromconf"
    assert pp.config_user_password("alice", "plainconf", passwd) == "plainconf"
    assert pp.config_user_password("dan", "", passwd) is None        # AES that does not decrypt: logged
