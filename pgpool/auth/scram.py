"""SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it: verifiers, client and server sides.

Pure: no sockets.  The client side is what pgpool uses to log in to PostgreSQL with a plain
password; the server side authenticates a client against a stored verifier
(``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``) or a plain password.

Channel binding (``SCRAM-SHA-256-PLUS``, type ``tls-server-end-point``, RFC 5929) is used when the
caller passes the channel-binding data of a TLS connection (the hash of the server certificate, see
:func:`pgpool.proxy.tls.end_point_hash`): the server side then offers and checks it, the client side
chooses it when the server offers it (as libpq's ``channel_binding=prefer``).  Without that data
only ``SCRAM-SHA-256`` is offered and chosen.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import stringprep
import unicodedata
from dataclasses import dataclass

MECHANISM = "SCRAM-SHA-256"
MECHANISM_PLUS = "SCRAM-SHA-256-PLUS"
VERIFIER_PREFIX = "SCRAM-SHA-256$"
DEFAULT_ITERATIONS = 4096
SALT_LEN = 16                 # PostgreSQL's SCRAM_DEFAULT_SALT_LEN
NONCE_RAW_LEN = 18            # PostgreSQL's SCRAM_RAW_NONCE_LEN
KEY_LEN = 32                  # SHA-256 digest size
CBIND_TYPE = "tls-server-end-point"
GS2_HEADER_NO_BINDING = "n,,"
GS2_HEADER_NO_SERVER_BINDING = "y,,"            # client could bind, server did not offer it
GS2_HEADER_BINDING = f"p={CBIND_TYPE},,"
CBIND_NO_BINDING = {"n": "biws", "y": "eSws"}   # base64 of the gs2 header "n,," / "y,,"

PROTOCOL_VIOLATION = "08P01"
FEATURE_NOT_SUPPORTED = "0A000"
INVALID_PASSWORD = "28P01"


class ScramError(Exception):
    """A failed or malformed SCRAM exchange; carries PostgreSQL's message, detail and SQLSTATE."""

    def __init__(self, message: str, detail: str | None = None, sqlstate: str = PROTOCOL_VIOLATION):
        super().__init__(message if detail is None else f"{message}: {detail}")
        self.message = message
        self.detail = detail
        self.sqlstate = sqlstate


# ---- SASLprep (RFC 4013), with PostgreSQL's fallback to the raw password ----------------------

_PROHIBITED = (stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22,
               stringprep.in_table_c3, stringprep.in_table_c4, stringprep.in_table_c5,
               stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
               stringprep.in_table_c9, stringprep.in_table_a1)


def _saslprep_strict(password: str) -> str | None:
    mapped = "".join(" " if stringprep.in_table_c12(ch) else ch
                     for ch in password if not stringprep.in_table_b1(ch))
    normalized = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    if not normalized or any(check(ch) for ch in normalized for check in _PROHIBITED):
        return None
    if any(stringprep.in_table_d1(ch) for ch in normalized):
        if any(stringprep.in_table_d2(ch) for ch in normalized):
            return None
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])):
            return None
    return normalized


def saslprep(password: str | bytes) -> bytes:
    """The password bytes SCRAM hashes, as PostgreSQL's pg_saslprep() prepares them: ASCII and
    invalid UTF-8 pass unchanged, anything SASLprep rejects is used as it was given."""
    raw = password if isinstance(password, bytes) else password.encode()
    if raw.isascii():
        return raw
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return raw
    prepared = _saslprep_strict(text)
    return raw if prepared is None else prepared.encode()


# ---- key derivation and verifiers --------------------------------------------------------------

def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def salted_password(password: str | bytes, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)


@dataclass(frozen=True)
class ScramVerifier:
    """What PostgreSQL stores for a SCRAM password (``pg_authid.rolpassword``)."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(cls, password: str | bytes, salt: bytes | None = None,
                      iterations: int = DEFAULT_ITERATIONS) -> ScramVerifier:
        salt = os.urandom(SALT_LEN) if salt is None else salt
        salted = salted_password(password, salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        return cls(iterations, salt, hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key"))

    @classmethod
    def parse(cls, text: str) -> ScramVerifier:
        """Parse ``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>``; ValueError when invalid."""
        if not text.startswith(VERIFIER_PREFIX):
            raise ValueError("not a SCRAM-SHA-256 verifier")
        try:
            params, keys = text[len(VERIFIER_PREFIX):].split("$")
            iterations, salt = params.split(":")
            stored_key, server_key = keys.split(":")
            verifier = cls(int(iterations), _unb64(salt), _unb64(stored_key), _unb64(server_key))
        except (ValueError, binascii.Error) as exc:
            raise ValueError(f"invalid SCRAM-SHA-256 verifier: {exc}") from None
        if verifier.iterations < 1 or len(verifier.stored_key) != KEY_LEN or len(verifier.server_key) != KEY_LEN:
            raise ValueError("invalid SCRAM-SHA-256 verifier: bad iteration count or key length")
        return verifier

    def __str__(self) -> str:
        return (f"{VERIFIER_PREFIX}{self.iterations}:{_b64(self.salt)}"
                f"${_b64(self.stored_key)}:{_b64(self.server_key)}")


def build_verifier(password: str | bytes, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS) -> str:
    """A verifier in PostgreSQL's format for ``password`` (random 16-byte salt unless given)."""
    return str(ScramVerifier.from_password(password, salt, iterations))


def is_verifier(secret: str) -> bool:
    return secret.startswith(VERIFIER_PREFIX)


def verify_plain_password(password: str | bytes, verifier: str | ScramVerifier) -> bool:
    """True when ``password`` matches the verifier (PostgreSQL's scram_verify_plain_password)."""
    v = ScramVerifier.parse(verifier) if isinstance(verifier, str) else verifier
    candidate = ScramVerifier.from_password(password, v.salt, v.iterations)
    return hmac.compare_digest(candidate.server_key, v.server_key)


@functools.lru_cache(maxsize=256)
def verifier_of_plain(password: str) -> ScramVerifier:
    """A verifier for a plain (pool_passwd) password, made once per process: PBKDF2 is the
    costly part of a SCRAM login, and a stored verifier keeps one salt too, as PostgreSQL's."""
    return ScramVerifier.from_password(password)


def make_nonce() -> str:
    return _b64(os.urandom(NONCE_RAW_LEN))


# ---- message attribute parsing (PostgreSQL's read_attr_value / read_any_attr) ------------------

class _Reader:
    """Walks the comma-separated ``a=value`` attributes of one SCRAM message."""

    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def _value(self, attr: str) -> str:
        if self.text[self.pos + 1:self.pos + 2] != "=":
            raise ScramError("malformed SCRAM message", f'Expected character "=" for attribute "{attr}".')
        end = self.text.find(",", self.pos + 2)
        end = len(self.text) if end < 0 else end
        value = self.text[self.pos + 2:end]
        self.pos = end + 1
        return value

    def expect(self, attr: str) -> str:
        found = self.text[self.pos:self.pos + 1]
        if found != attr:
            raise ScramError("malformed SCRAM message",
                             f'Expected attribute "{attr}" but found "{found or "end of input"}".')
        return self._value(attr)

    def any(self) -> tuple[str, str]:
        attr = self.text[self.pos:self.pos + 1]
        if not (attr.isascii() and attr.isalpha()):
            raise ScramError("malformed SCRAM message",
                             f'Attribute expected, but found invalid character "{attr or "end of input"}".')
        return attr, self._value(attr)


def _decode(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ScramError("malformed SCRAM message", "The message is not valid UTF-8.") from None


def _printable(nonce: str) -> bool:
    return all(0x21 <= ord(ch) <= 0x7E and ch != "," for ch in nonce)


# ---- client side ---------------------------------------------------------------------------------

def choose_mechanism(mechanisms: list[str], can_bind: bool = False) -> str:
    """The SASL mechanism pgpool picks from the server's list: SCRAM-SHA-256-PLUS when
    ``can_bind`` (a TLS connection with channel-binding data) and offered, else SCRAM-SHA-256."""
    if can_bind and MECHANISM_PLUS in mechanisms:
        return MECHANISM_PLUS
    if MECHANISM not in mechanisms:
        raise ScramError("none of the server's SASL authentication mechanisms are supported",
                         f"server offered: {', '.join(mechanisms) or 'nothing'}", FEATURE_NOT_SUPPORTED)
    return MECHANISM


class ScramClient:
    """The client half of one SCRAM-SHA-256 exchange.

    ``channel_binding``: the server's tls-server-end-point data, for SCRAM-SHA-256-PLUS;
    ``tls``: the connection is TLS but the server did not offer -PLUS (the "y" flag).
    ``first()`` -> client-first-message; ``final(server_first)`` -> client-final-message;
    ``verify(server_final)`` checks the server's signature (ScramError when it is wrong).
    """

    def __init__(self, password: str | bytes, nonce: str | None = None, username: str = "",
                 channel_binding: bytes | None = None, tls: bool = False):
        self.password = password
        self.nonce = nonce or make_nonce()
        # PostgreSQL ignores the SCRAM user name (the startup packet's is used); libpq sends "".
        self.first_bare = f"n={username},r={self.nonce}"
        self.header = (GS2_HEADER_BINDING if channel_binding is not None
                       else GS2_HEADER_NO_SERVER_BINDING if tls else GS2_HEADER_NO_BINDING)
        self.cbind = _b64(self.header.encode() + (channel_binding or b""))
        self._server_signature: bytes | None = None

    def first(self) -> bytes:
        return (self.header + self.first_bare).encode()

    def final(self, server_first: bytes) -> bytes:
        text = _decode(server_first)
        reader = _Reader(text)
        nonce = reader.expect("r")
        if len(nonce) <= len(self.nonce) or not nonce.startswith(self.nonce):
            raise ScramError("invalid SCRAM response from server (nonce mismatch)")
        try:
            salt = _unb64(reader.expect("s"))
        except binascii.Error:
            raise ScramError("malformed SCRAM message from server (invalid salt)") from None
        iterations = reader.expect("i")
        if not iterations.isdigit() or int(iterations) < 1:
            raise ScramError("malformed SCRAM message from server (invalid iteration count)")
        if not reader.at_end():
            raise ScramError("malformed SCRAM message from server (garbage at end of server-first-message)")
        without_proof = f"c={self.cbind},r={nonce}"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode()
        salted = salted_password(self.password, salt, int(iterations))
        client_key = _hmac(salted, b"Client Key")
        proof = _xor(client_key, _hmac(hashlib.sha256(client_key).digest(), auth_message))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={_b64(proof)}".encode()

    def verify(self, server_final: bytes) -> None:
        if self._server_signature is None:
            raise ScramError("invalid SCRAM exchange state")
        reader = _Reader(_decode(server_final))
        if reader.text.startswith("e="):
            raise ScramError(f"error received from server in SCRAM exchange: {reader.expect('e')}",
                             sqlstate=INVALID_PASSWORD)
        try:
            signature = _unb64(reader.expect("v"))
        except binascii.Error:
            raise ScramError("malformed SCRAM message from server (invalid server signature)") from None
        if not hmac.compare_digest(signature, self._server_signature):
            raise ScramError("incorrect server signature", sqlstate=INVALID_PASSWORD)


# ---- server side ---------------------------------------------------------------------------------

class ScramServer:
    """The server half of one SCRAM-SHA-256 exchange, against a verifier or a plain password.

    ``channel_binding``: our tls-server-end-point data when the client connection is TLS (then
    SCRAM-SHA-256-PLUS is offered, see :meth:`mechanisms`); ``first(client_first, plus)`` ->
    server-first-message (``plus``: the client chose -PLUS); ``final(client_final)`` ->
    server-final-message when the proof is right, None when the password is wrong.  Malformed
    input or a channel-binding mismatch -> ScramError.
    """

    def __init__(self, secret: str | ScramVerifier, nonce: str | None = None,
                 channel_binding: bytes | None = None):
        if isinstance(secret, ScramVerifier):
            self.verifier = secret
        elif is_verifier(secret):
            self.verifier = ScramVerifier.parse(secret)
        else:
            self.verifier = verifier_of_plain(secret)
        self.server_nonce = nonce or make_nonce()
        self.channel_binding = channel_binding
        self.expected_cbind = ""
        self.cbind_flag = ""
        self.client_nonce = ""
        self.client_first_bare = ""
        self.server_first = ""

    def mechanisms(self) -> list[str]:
        """The SASL mechanisms to offer, PostgreSQL's order."""
        return [MECHANISM_PLUS, MECHANISM] if self.channel_binding is not None else [MECHANISM]

    def _gs2_header_end(self, text: str, plus: bool) -> int:
        """Check the gs2 header's channel-binding part; the index of the comma that ends it."""
        self.cbind_flag = flag = text[:1]
        if flag == "p" and self.channel_binding is None:
            raise ScramError("client requires SCRAM channel binding, but it is not supported",
                             "pgpool offers channel binding only on SSL connections; connect with sslmode=require "
                             "or channel_binding=disable.", FEATURE_NOT_SUPPORTED)
        if flag not in ("n", "y", "p"):
            raise ScramError("malformed SCRAM message", f'Unexpected channel-binding flag "{flag}".')
        if plus and flag != "p":
            raise ScramError("malformed SCRAM message", "The client selected SCRAM-SHA-256-PLUS, but the SCRAM "
                                                        "message does not include channel binding data.")
        if flag == "y" and self.channel_binding is not None:
            raise ScramError("SCRAM channel binding negotiation error",
                             "The client supports SCRAM channel binding but thinks the server does not.  "
                             "However, this server does support channel binding.")
        if flag != "p":
            self.expected_cbind = CBIND_NO_BINDING[flag]
            return 1
        if not plus:
            raise ScramError("malformed SCRAM message",
                             "The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message "
                             "includes channel binding data.")
        end = text.find(",")
        if not text.startswith("p=") or end < 0:
            raise ScramError("malformed SCRAM message", 'Expected character "=" for attribute "p".')
        if text[2:end] != CBIND_TYPE:
            raise ScramError(f'unsupported SCRAM channel-binding type "{text[2:end]}"')
        return end

    def first(self, client_first: bytes, plus: bool = False) -> bytes:
        text = _decode(client_first)
        comma = self._gs2_header_end(text, plus)
        if text[comma:comma + 1] != ",":
            raise ScramError("malformed SCRAM message",
                             f'Comma expected, but found character "{text[comma:comma + 1]}".')
        if text[comma + 1:comma + 2] == "a":
            raise ScramError("client uses authorization identity, but it is not supported",
                             sqlstate=FEATURE_NOT_SUPPORTED)
        if text[comma + 1:comma + 2] != ",":
            raise ScramError("malformed SCRAM message",
                             f'Unexpected attribute "{text[comma + 1:comma + 2]}" in client-first-message.')
        if self.cbind_flag == "p":
            self.expected_cbind = _b64(text[:comma + 2].encode() + self.channel_binding)
        self.client_first_bare = text[comma + 2:]
        reader = _Reader(self.client_first_bare)
        if self.client_first_bare.startswith("m"):
            raise ScramError("client requires an unsupported SCRAM extension", sqlstate=FEATURE_NOT_SUPPORTED)
        reader.expect("n")
        self.client_nonce = reader.expect("r")
        if not _printable(self.client_nonce):
            raise ScramError("non-printable characters in SCRAM nonce")
        while not reader.at_end():
            reader.any()
        v = self.verifier
        self.server_first = f"r={self.client_nonce}{self.server_nonce},s={_b64(v.salt)},i={v.iterations}"
        return self.server_first.encode()

    def final(self, client_final: bytes) -> bytes | None:
        text = _decode(client_final)
        reader = _Reader(text)
        cbind = reader.expect("c")
        if cbind != self.expected_cbind:
            if self.cbind_flag == "p":
                raise ScramError("SCRAM channel binding check failed")
            raise ScramError("unexpected SCRAM channel-binding attribute in client-final-message")
        nonce = reader.expect("r")
        proof_start = reader.pos
        attr, value = reader.any()
        while attr != "p":
            proof_start = reader.pos
            attr, value = reader.any()
        try:
            proof = _unb64(value)
        except binascii.Error:
            proof = b""
        if len(proof) != KEY_LEN:
            raise ScramError("malformed SCRAM message", "Malformed proof in client-final-message.")
        if not reader.at_end():
            raise ScramError("malformed SCRAM message", "Garbage found at the end of client-final-message.")
        if nonce != self.client_nonce + self.server_nonce:
            raise ScramError("invalid SCRAM response", "Nonce does not match.")
        without_proof = text[:proof_start - 1]
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        v = self.verifier
        client_key = _xor(proof, _hmac(v.stored_key, auth_message))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), v.stored_key):
            return None
        return f"v={_b64(_hmac(v.server_key, auth_message))}".encode()
