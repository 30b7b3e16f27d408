"""pool_hba.conf: parse the file and find the rule that governs a client connection.

Follows pgpool-II 4.3 (src/auth/pool_hba.c), which differs from PostgreSQL's pg_hba.conf:
the database field knows ``all`` and ``sameuser`` but not ``replication``; ``samerole`` /
``samegroup`` and ``+group`` user entries are unsupported and make their line never match;
methods are trust, reject, password, md5, scram-sha-256, cert, pam and ldap.  A hostssl line
while ssl is off is accepted with a warning (it cannot match).  Parse errors name the file and
line; every error of a file is reported, and a file with any error is rejected as a whole.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Callable, Iterable

MAX_LINE = 8192
MAX_TOKEN = 256
MAX_INCLUDE_DEPTH = 10

CONN_TYPES = ("local", "host", "hostssl", "hostnossl")
METHODS = ("trust", "reject", "password", "md5", "scram-sha-256", "cert", "pam", "ldap")
ADDRESS_KEYWORDS = ("all", "samehost", "samenet")
DEFAULT_PAM_SERVICE = "pgpool"
MATCH_MEMO_SIZE = 4096          # remembered match results (cleared when full)

# Authentication option -> the method it belongs to.  A pam option on another method is only
# warned about (pgpool-II logs it and keeps the line); an ldap option there is an error.
OPTION_METHOD = {
    "pamservice": "pam", "pam_use_hostname": "pam",
    **{name: "ldap" for name in ("ldapurl", "ldaptls", "ldapscheme", "ldapserver", "ldapport",
                                 "ldapbinddn", "ldapbindpasswd", "ldapsearchattribute",
                                 "ldapsearchfilter", "ldapbasedn", "ldapprefix", "ldapsuffix",
                                 "backend_use_passwd")},
}
OPTION_MISMATCH_IS_ERROR = {"pam": False, "ldap": True}

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class HbaToken:
    """One word of a field; a quoted keyword (``"all"``) loses its special meaning."""

    value: str
    quoted: bool = False

    def is_keyword(self, word: str) -> bool:
        return not self.quoted and self.value == word


@dataclass(frozen=True)
class HbaRule:
    """One parsed pool_hba.conf line."""

    filename: str
    line_number: int
    raw_line: str
    conn_type: str                          # local | host | hostssl | hostnossl
    databases: tuple[HbaToken, ...]
    users: tuple[HbaToken, ...]
    method: str
    address_keyword: str | None = None      # all | samehost | samenet
    address: IpAddress | None = None        # with mask: an address range
    mask: IpAddress | None = None
    hostname: str | None = None             # a host name (".suffix" matches a domain)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def pam_service(self) -> str:
        """The PAM service of a ``pam`` line: its ``pamservice`` option, else "pgpool"."""
        return self.options.get("pamservice") or DEFAULT_PAM_SERVICE


@dataclass(frozen=True)
class HbaIssue:
    """An error or warning about one line (line_number None: about the whole file)."""

    filename: str
    line_number: int | None
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        return f"{self.message} ({_where(self)})" + (f"; hint: {self.hint}" if self.hint else "")


class HbaError(Exception):
    """pool_hba.conf could not be loaded; ``errors`` lists every problem found."""

    def __init__(self, errors: list[HbaIssue]):
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


class _LineError(Exception):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


# ---- tokenizer (pgpool-II's next_token / next_field_expand / tokenize_inc_file) ----------------

_BLANKS = " \t\r"


def _next_token(line: str, pos: int) -> tuple[str | None, bool, bool, int]:
    """(token or None at end of line, quoted-at-start, ended-by-comma, new position)."""
    n = len(line)
    while pos < n and (line[pos] in _BLANKS or line[pos] == ","):
        pos += 1
    buf: list[str] = []
    in_quote = was_quote = saw_quote = initial_quote = comma = False
    while pos < n and (line[pos] not in _BLANKS or in_quote):
        c = line[pos]
        if c == "#" and not in_quote:
            pos = n
            break
        if len(buf) >= MAX_TOKEN - 1:
            raise _LineError(f'authentication file token too long, skipping: "{"".join(buf)}"')
        if c == "," and not in_quote:
            comma = True
            pos += 1
            break
        if c != '"' or was_quote:
            buf.append(c)
        was_quote = not was_quote if (in_quote and c == '"') else False
        if c == '"':
            in_quote = not in_quote
            saw_quote = True
            if not buf:
                initial_quote = True
        pos += 1
    token = "".join(buf) if (saw_quote or buf) else None
    return token, initial_quote, comma, pos


class _Tokenizer:
    """Splits a file into lines of fields of tokens, expanding ``@file`` inclusions."""

    def __init__(self, read: Callable[[str], str]):
        self.read = read

    def lines(self, filename: str, text: str, depth: int = 0):
        """Yield (line number, raw line, fields or None, error or None) for each non-blank line."""
        for number, raw in enumerate(text.splitlines(), start=1):
            try:
                if len(raw) >= MAX_LINE - 1:
                    raise _LineError("authentication file line too long")
                fields = self._fields(filename, raw, depth)
            except _LineError as exc:
                yield number, raw, None, exc
                continue
            if fields:
                yield number, raw, fields, None

    def _fields(self, filename: str, line: str, depth: int) -> list[list[HbaToken]]:
        fields, pos = [], 0
        while pos < len(line):
            tokens: list[HbaToken] = []
            while True:
                token, quoted, comma, pos = _next_token(line, pos)
                if token is None:
                    break
                if not quoted and token.startswith("@") and len(token) > 1:
                    tokens.extend(self._include(filename, token[1:], depth))
                else:
                    tokens.append(HbaToken(token, quoted))
                if not comma:
                    break
            if tokens:
                fields.append(tokens)
        return fields

    def _include(self, outer: str, name: str, depth: int) -> list[HbaToken]:
        path = name if os.path.isabs(name) else os.path.normpath(os.path.join(os.path.dirname(outer), name))
        if depth >= MAX_INCLUDE_DEPTH:
            raise _LineError(f'could not open secondary authentication file "@{name}" as "{path}": '
                             f"inclusions nested more than {MAX_INCLUDE_DEPTH} deep")
        try:
            text = self.read(path)
        except OSError as exc:
            raise _LineError(f'could not open secondary authentication file "@{name}" as "{path}": '
                             f"{exc.strerror or exc}") from None
        tokens: list[HbaToken] = []
        for _number, _raw, fields, error in self.lines(path, text, depth + 1):
            if error is not None:
                raise error
            tokens.extend(tok for f in fields for tok in f)
        return tokens


# ---- line parser -------------------------------------------------------------------------------

def _single(field: list[HbaToken], message: str, hint: str | None = None) -> HbaToken:
    if len(field) > 1:
        raise _LineError(message, hint)
    return field[0]


def _numeric_address(text: str) -> IpAddress | None:
    """The address ``text`` names in numeric form (getaddrinfo AI_NUMERICHOST), None if not numeric."""
    try:
        info = socket.getaddrinfo(text, None, flags=socket.AI_NUMERICHOST)
    except UnicodeError:                    # not encodable as a host name: surely not numeric
        return None
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_NONAME:
            return None
        raise _LineError(f'invalid IP address "{text}": {exc.strerror}') from None
    return ipaddress.ip_address(info[0][4][0].split("%")[0])


def _cidr_mask(bits: str, address: IpAddress) -> IpAddress | None:
    if not re.fullmatch(r"[0-9]+", bits) or int(bits) > address.max_prefixlen:
        return None
    width = address.max_prefixlen
    return ipaddress.ip_address(((1 << width) - 1) ^ ((1 << (width - int(bits))) - 1))


def _parse_address(rule: dict, fields: list[list[HbaToken]], i: int) -> int:
    """Fill the address part of ``rule`` from fields[i:]; return the index of the next field."""
    if i >= len(fields):
        raise _LineError("end-of-line before IP address specification")
    token = _single(fields[i], "multiple values specified for host address", "Specify one address range per line.")
    keyword = next((k for k in ADDRESS_KEYWORDS if token.is_keyword(k)), None)
    if keyword:
        rule["address_keyword"] = keyword
        return i + 1
    text, slash, bits = token.value.partition("/")
    address = _numeric_address(text)
    if address is None:
        if slash:
            raise _LineError(f'specifying both host name and CIDR mask is invalid: "{token.value}"')
        rule["hostname"] = text
        return i + 1
    rule["address"] = address
    if slash:
        mask = _cidr_mask(bits, address)
        if mask is None:
            raise _LineError(f'invalid CIDR mask in address "{token.value}"')
        rule["mask"] = mask
        return i + 1
    if i + 1 >= len(fields):
        raise _LineError("end-of-line before netmask specification",
                         "Specify an address range in CIDR notation, or provide a separate netmask.")
    mask_token = _single(fields[i + 1], "multiple values specified for netmask")
    mask = _numeric_address(mask_token.value)
    if mask is None:
        raise _LineError(f'invalid IP mask "{mask_token.value}": Name or service not known')
    if mask.version != address.version:
        raise _LineError("IP address and mask do not match")
    rule["mask"] = mask
    return i + 2


def _parse_options(method: str, fields: list[list[HbaToken]], warn: Callable[[str], None]) -> dict[str, str]:
    options: dict[str, str] = {}
    for token in (tok for f in fields for tok in f):
        name, eq, value = token.value.partition("=")
        if not eq:
            raise _LineError(f"authentication option not in name=value format: {token.value}")
        owner = OPTION_METHOD.get(name)
        if owner is None:
            raise _LineError(f'unrecognized authentication option name: "{name}"')
        if owner != method:
            if OPTION_MISMATCH_IS_ERROR[owner]:
                raise _LineError(f'authentication option "{name}" is only valid for authentication methods {owner}')
            warn(f'{name} authentication option can only be configured for authentication method "{owner}"')
            continue
        if name == "ldapport" and not (value.isdigit() and int(value) > 0):
            raise _LineError(f'invalid LDAP port number: "{value}"')
        options[name] = value
    return options


def _parse_line(filename: str, number: int, raw: str, fields: list[list[HbaToken]],
                ssl_enabled: bool, warn: Callable[[str, str | None], None]) -> HbaRule:
    conn = _single(fields[0], "multiple values specified for connection type",
                   "Specify exactly one connection type per line.").value
    if conn not in CONN_TYPES:
        raise _LineError(f'invalid connection type "{conn}"')
    if conn == "hostssl" and not ssl_enabled:
        warn("hostssl record cannot match because SSL is disabled", "Set ssl = on in pgpool.conf")
    if len(fields) < 2:
        raise _LineError("end-of-line before database specification")
    if len(fields) < 3:
        raise _LineError("end-of-line before role specification")
    rule: dict = {"filename": filename, "line_number": number, "raw_line": raw, "conn_type": conn,
                  "databases": tuple(fields[1]), "users": tuple(fields[2])}
    i = 3 if conn == "local" else _parse_address(rule, fields, 3)
    if i >= len(fields):
        raise _LineError("end-of-line before authentication method")
    method = _single(fields[i], "multiple values specified for authentication type",
                     "Specify exactly one authentication type per line.").value
    if method not in METHODS:
        raise _LineError(f'invalid authentication method "{method}"')
    rule["method"] = method
    rule["options"] = _parse_options(method, fields[i + 1:], lambda msg: warn(msg, None))
    for tok in rule["databases"]:
        if tok.is_keyword("samerole") or tok.is_keyword("samegroup"):
            warn('group tokens "samegroup" and "samerole" are not supported by Pgpool-II', None)
    for tok in rule["users"]:
        if not tok.quoted and tok.value.startswith("+"):
            warn('group token "+" is not supported by Pgpool-II', None)
    return HbaRule(**rule)


def _read_file(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        return fh.read()


def parse_hba_text(text: str, filename: str = "pool_hba.conf", ssl_enabled: bool = False,
                   read: Callable[[str], str] = _read_file) -> HbaConfig:
    """Parse pool_hba.conf text (``@file`` inclusions are read relative to ``filename``)."""
    rules: list[HbaRule] = []
    errors: list[HbaIssue] = []
    warnings: list[HbaIssue] = []
    for number, raw, fields, error in _Tokenizer(read).lines(filename, text):
        def warn(message: str, hint: str | None, _n: int = number) -> None:
            warnings.append(HbaIssue(filename, _n, message, hint))
        try:
            if error is not None:
                raise error
            rules.append(_parse_line(filename, number, raw, fields, ssl_enabled, warn))
        except _LineError as exc:
            errors.append(HbaIssue(filename, number, exc.message, exc.hint))
    if not errors and not rules:
        errors.append(HbaIssue(filename, None, f'configuration file "{filename}" contains no entries'))
    if errors:
        raise HbaError(errors)
    return HbaConfig(rules, warnings)


def load_hba(path: str | os.PathLike, ssl_enabled: bool = False) -> HbaConfig:
    """Read and parse a pool_hba.conf file; HbaError names every bad line."""
    path = os.path.abspath(os.fspath(path))
    try:
        text = _read_file(path)
    except OSError as exc:
        raise HbaError([HbaIssue(path, None, f'could not open configuration file "{path}": '
                                             f"{exc.strerror or exc}")]) from None
    return parse_hba_text(text, path, ssl_enabled)


# ---- matching ----------------------------------------------------------------------------------

def _in_range(client: IpAddress, address: IpAddress, mask: IpAddress) -> bool:
    return client.version == address.version and \
        (int(client) & int(mask)) == (int(address) & int(mask))


def local_interfaces() -> list[tuple[IpAddress, IpAddress]]:
    """(address, netmask) of every IPv4/IPv6 address of this host's network interfaces."""
    import psutil
    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6) and a.netmask:
                address = ipaddress.ip_address(a.address.split("%")[0])
                netmask = a.netmask if "/" not in a.netmask else a.netmask.split("/")[0]
                out.append((address, ipaddress.ip_address(netmask)))
    return out


def resolve_client_hostname(client: IpAddress) -> str | None:
    """The client's host name when reverse and forward DNS agree (as pgpool-II checks), else None."""
    try:
        name = socket.gethostbyaddr(str(client))[0]
        forward = socket.getaddrinfo(name, None)
    except (OSError, UnicodeError):
        return None
    addresses = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in forward}
    return name if client in addresses else None


def hostname_matches(pattern: str, actual: str) -> bool:
    """pool_hba host name comparison: case-insensitive, ``.example.com`` matches a suffix."""
    pattern, actual = pattern.lower(), actual.lower()
    return actual.endswith(pattern) if pattern.startswith(".") else actual == pattern


def _database_matches(tokens: Iterable[HbaToken], database: str, user: str) -> bool:
    for tok in tokens:
        if tok.is_keyword("all"):
            return True
        if tok.is_keyword("sameuser"):
            if database == user:
                return True
        elif tok.is_keyword("samegroup") or tok.is_keyword("samerole"):
            return False
        elif tok.value == database:
            return True
    return False


def _user_matches(tokens: Iterable[HbaToken], user: str) -> bool:
    for tok in tokens:
        if not tok.quoted and tok.value.startswith("+"):
            return False
        if tok.value == user or tok.is_keyword("all"):
            return True
    return False


class HbaConfig:
    """The rules of a pool_hba.conf, first match wins.  ``warnings`` lists what was accepted with a
    complaint.  ``interfaces`` and ``resolve_hostname`` are replaceable for samehost / samenet and
    host-name rules (defaults: this host's interfaces, reverse+forward DNS)."""

    def __init__(self, rules: list[HbaRule], warnings: list[HbaIssue] | None = None,
                 interfaces: Callable[[], list[tuple[IpAddress, IpAddress]]] = local_interfaces,
                 resolve_hostname: Callable[[IpAddress], str | None] = resolve_client_hostname):
        self.rules = rules
        self.warnings = warnings or []
        self.interfaces = interfaces
        self.resolve_hostname = resolve_hostname
        # Results are remembered unless a rule depends on the host's interfaces or on DNS,
        # which may change: matching is then a function of the connection's attributes only.
        self._memo: dict | None = None if any(
            r.hostname is not None or r.address_keyword in ("samehost", "samenet") for r in rules) else {}

    def match(self, conn_type: str, is_ssl: bool, client_addr: str | None, database: str,
              user: str) -> HbaRule | None:
        """The first rule for a connection: ``conn_type`` "local" (Unix socket, ``client_addr``
        ignored) or "host" (TCP, ``client_addr`` its IP address); None = no entry (reject)."""
        memo = self._memo
        if memo is None:
            return self._match(conn_type, is_ssl, client_addr, database, user)
        key = (conn_type, is_ssl, client_addr, database, user)
        rule = memo.get(key, memo)          # the dict itself: not remembered yet
        if rule is not memo:
            return rule
        rule = self._match(conn_type, is_ssl, client_addr, database, user)
        if len(memo) >= MATCH_MEMO_SIZE:
            memo.clear()
        memo[key] = rule
        return rule

    def _match(self, conn_type: str, is_ssl: bool, client_addr: str | None, database: str,
               user: str) -> HbaRule | None:
        if conn_type not in ("local", "host"):
            raise ValueError('conn_type must be "local" or "host"')
        client = ipaddress.ip_address(client_addr.split("%")[0]) if conn_type == "host" else None
        hostname: list[str | None] = []          # resolved once, on first need
        for rule in self.rules:
            if (rule.conn_type == "local") != (conn_type == "local"):
                continue
            if client is not None and not self._host_matches(rule, is_ssl, client, hostname):
                continue
            if _database_matches(rule.databases, database, user) and _user_matches(rule.users, user):
                return rule
        return None

    def _host_matches(self, rule: HbaRule, is_ssl: bool, client: IpAddress, hostname: list) -> bool:
        if rule.conn_type == ("hostnossl" if is_ssl else "hostssl"):
            return False
        if rule.address_keyword == "all":
            return True
        if rule.address_keyword == "samehost":
            return any(client == address for address, _mask in self.interfaces())
        if rule.address_keyword == "samenet":
            return any(_in_range(client, address, mask) for address, mask in self.interfaces())
        if rule.hostname is not None:
            if not hostname:
                hostname.append(self.resolve_hostname(client))
            return hostname[0] is not None and hostname_matches(rule.hostname, hostname[0])
        return _in_range(client, rule.address, rule.mask)


def load_hba_logged(path: str | os.PathLike, ssl_enabled: bool, previous: HbaConfig | None) -> HbaConfig | None:
    """What pgpool-II does at start and on reload: read ``path``, log its warnings and return the
    new rules; when it has errors, log each (file and line) and keep ``previous`` (None at start:
    every client is then refused with "missing or erroneous pool_hba.conf file")."""
    from pgpool import log
    try:
        config = load_hba(path, ssl_enabled)
    except HbaError as exc:
        for issue in exc.errors:
            log.log("LOG", issue.message, detail=_where(issue), hint=issue.hint)
        log.log("LOG", f'failed to load "{os.path.abspath(os.fspath(path))}"',
                detail="the previous pool_hba.conf rules stay in force" if previous is not None
                else "no pool_hba.conf rules: every client is refused until it is fixed and reloaded")
        return previous
    for issue in config.warnings:
        log.log("LOG", issue.message, detail=_where(issue), hint=issue.hint)
    return config


def _where(issue: HbaIssue) -> str:
    return (f'line {issue.line_number} of configuration file "{issue.filename}"'
            if issue.line_number is not None else f'configuration file "{issue.filename}"')
