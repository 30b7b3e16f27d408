"""SCRAM-SHA-256: RFC 7677 vector, PostgreSQL's verifier format, client <-> server, malformed input."""

import base64

import pytest

from pgpool.auth import scram

# RFC 7677 section 3
RFC_USER, RFC_PASSWORD = "user", "pencil"
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

# Produced by PostgreSQL 15: SET password_encryption='scram-sha-256'; ALTER ROLE ... PASSWORD 'pgpool'
# (salt read back from pg_authid; the integration test re-checks this against a live server).
PG_VERIFIERS = [
    ("pgpool", "SCRAM-SHA-256$4096:xCe1x01U2McBd8XSaWdepg==$"
               "jJidkb5SlmDS9rgxfWz/CQXDDn38H8MLC0Xsvjb7x3M=:bHLQyo0gao/pSf5MXAzcPav9auU8Zv6aN7jiOKzYzfk="),
    ("scr\u00e4m pass", "SCRAM-SHA-256$4096:itb/g/B6LVkFZ04iF4Xqxw==$"
                        "L3SSBkDg/DI5NWwgPt0DDCm7yoUZoYNJmEgChKD7bTA=:J0NsaTlmsvYygNRKrtfO/l0mw5jsMP9kLny8FoHVtc4="),
]


def rfc_server():
    verifier = scram.ScramVerifier.from_password(RFC_PASSWORD, RFC_SALT, 4096)
    return scram.ScramServer(verifier, nonce=RFC_SERVER_NONCE)


def test_rfc7677_client():
    client = scram.ScramClient(RFC_PASSWORD, nonce=RFC_CLIENT_NONCE, username=RFC_USER)
    assert client.first() == RFC_CLIENT_FIRST
    assert client.final(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    client.verify(RFC_SERVER_FINAL)


def test_rfc7677_server():
    server = rfc_server()
    assert server.first(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert server.final(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL


def test_client_rejects_wrong_server_signature():
    client = scram.ScramClient(RFC_PASSWORD, nonce=RFC_CLIENT_NONCE, username=RFC_USER)
    client.final(RFC_SERVER_FIRST)
    bad = b"v=" + base64.b64encode(b"\0" * 32)
    with pytest.raises(scram.ScramError, match="incorrect server signature"):
        client.verify(bad)
    with pytest.raises(scram.ScramError, match="error received from server in SCRAM exchange: invalid-proof"):
        client.verify(b"e=invalid-proof")


@pytest.mark.parametrize("server_first, message", [
    (b"r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce mismatch"),
    (b"r=" + RFC_CLIENT_NONCE.encode() + b",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce mismatch"),
    (RFC_SERVER_FIRST.replace(b"i=4096", b"i=abc"), "invalid iteration count"),
    (RFC_SERVER_FIRST.replace(b"s=W22", b"s=!22"), "invalid salt"),
    (RFC_SERVER_FIRST + b",x=1", "garbage at end"),
    (b"s=W22ZaJ0SNY7soEsUEjb6gQ==", 'Expected attribute "r"'),
])
def test_client_rejects_bad_server_first(server_first, message):
    client = scram.ScramClient(RFC_PASSWORD, nonce=RFC_CLIENT_NONCE)
    with pytest.raises(scram.ScramError, match=message):
        client.final(server_first)


def test_client_verify_before_final():
    with pytest.raises(scram.ScramError, match="invalid SCRAM exchange state"):
        scram.ScramClient("x").verify(RFC_SERVER_FINAL)


@pytest.mark.parametrize("secret_kind", ["verifier", "plain"])
@pytest.mark.parametrize("password, ok", [("s3cret", True), ("S3cret", False), ("", False)])
def test_client_server_roundtrip(secret_kind, password, ok):
    stored = scram.build_verifier("s3cret") if secret_kind == "verifier" else "s3cret"
    server = scram.ScramServer(stored)
    client = scram.ScramClient(password)
    server_first = server.first(client.first())
    final = server.final(client.final(server_first))
    if ok:
        assert final is not None
        client.verify(final)
    else:
        assert final is None


@pytest.mark.parametrize("password, verifier", PG_VERIFIERS)
def test_verifier_format_matches_postgresql(password, verifier):
    parsed = scram.ScramVerifier.parse(verifier)
    assert parsed.iterations == 4096 and len(parsed.salt) == 16
    assert scram.build_verifier(password, parsed.salt, parsed.iterations) == verifier
    assert str(parsed) == verifier
    assert scram.verify_plain_password(password, verifier)
    assert not scram.verify_plain_password(password + "x", verifier)


def test_build_verifier_random_salt():
    a, b = scram.build_verifier("x"), scram.build_verifier("x")
    assert a != b and a.startswith("SCRAM-SHA-256$4096:")
    assert scram.verify_plain_password("x", a) and scram.verify_plain_password("x", b)
    assert len(scram.ScramVerifier.parse(a).salt) == scram.SALT_LEN


@pytest.mark.parametrize("text", [
    "md5abc",
    "SCRAM-SHA-256$4096:c2FsdA==",
    "SCRAM-SHA-256$x:c2FsdA==$" + "A" * 44 + ":" + "A" * 44,
    "SCRAM-SHA-256$4096:c2FsdA==$c2hvcnQ=:c2hvcnQ=",
    "SCRAM-SHA-256$4096:!!!$" + "A" * 43 + "=:" + "A" * 43 + "=",
    "SCRAM-SHA-256$0:c2FsdA==$" + "A" * 43 + "=:" + "A" * 43 + "=",
])
def test_parse_invalid_verifier(text):
    with pytest.raises(ValueError):
        scram.ScramVerifier.parse(text)


@pytest.mark.parametrize("password, prepared", [
    ("pencil", b"pencil"),
    ("I\u00adX", "IX".encode()),               # RFC 4013 examples
    ("user", b"user"),
    ("\u00aa", b"a"),
    ("\u2168", b"IX"),
    ("a\u00a0b", b"a b"),                      # non-ASCII space -> space
    ("\u0007x", b"\x07x"),                     # ASCII passes unchanged (PostgreSQL's fast path)
    ("x\u0007\u00e9", "x\u0007\u00e9".encode()),  # prohibited control char: raw password used
    ("\u0627\u0031", "\u0627\u0031".encode()),     # bidi rule broken: raw password used
    (b"\xff\xfe", b"\xff\xfe"),                # invalid UTF-8: raw
    ("\u00ad", "\u00ad".encode()),             # maps to nothing: raw
])
def test_saslprep(password, prepared):
    assert scram.saslprep(password) == prepared


@pytest.mark.parametrize("client_first, message, sqlstate", [
    (b"p=tls-server-end-point,,n=,r=abc", "client requires SCRAM channel binding", "0A000"),
    (b"x,,n=,r=abc", "malformed SCRAM message", "08P01"),
    (b"n;,n=,r=abc", "malformed SCRAM message", "08P01"),
    (b"n,a=bob,n=,r=abc", "authorization identity", "0A000"),
    (b"n,,m=ext,n=,r=abc", "unsupported SCRAM extension", "0A000"),
    (b"n,,r=abc", "malformed SCRAM message", "08P01"),
    (b"n,,n=,r=a\x01b", "non-printable characters in SCRAM nonce", "08P01"),
    (b"n,,n=,r=abc,1=x", "malformed SCRAM message", "08P01"),
    (b"n,,n=,r=\xff", "malformed SCRAM message", "08P01"),
])
def test_server_rejects_bad_client_first(client_first, message, sqlstate):
    with pytest.raises(scram.ScramError, match=message) as info:
        scram.ScramServer("pw").first(client_first)
    assert info.value.sqlstate == sqlstate


def test_server_accepts_y_flag_and_extensions():
    server = scram.ScramServer(scram.ScramVerifier.from_password(RFC_PASSWORD, RFC_SALT, 4096),
                               nonce=RFC_SERVER_NONCE)
    server.first(b"y,,n=user,r=" + RFC_CLIENT_NONCE.encode() + b",x=ext")
    with pytest.raises(scram.ScramError, match="channel-binding attribute"):
        server.final(RFC_CLIENT_FINAL)                      # c=biws does not match flag "y"


@pytest.mark.parametrize("client_final, message", [
    (RFC_CLIENT_FINAL.replace(b"c=biws", b"c=eSws"), "channel-binding attribute"),
    (RFC_CLIENT_FINAL.replace(b"%hvYD", b"%hvYE"), "Nonce does not match"),
    (RFC_CLIENT_FINAL.replace(b"p=dHzb", b"p=dHz"), "Malformed proof"),
    (RFC_CLIENT_FINAL + b",x=1", "Garbage found at the end"),
    (b"r=x", 'Expected attribute "c"'),
])
def test_server_rejects_bad_client_final(client_final, message):
    server = rfc_server()
    server.first(RFC_CLIENT_FIRST)
    with pytest.raises(scram.ScramError, match=message):
        server.final(client_final)


def test_choose_mechanism():
    assert scram.choose_mechanism(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]) == "SCRAM-SHA-256"
    with pytest.raises(scram.ScramError, match="none of the server's SASL authentication mechanisms"):
        scram.choose_mechanism(["SCRAM-SHA-256-PLUS"])
