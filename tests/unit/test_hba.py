"""pool_hba.conf: tokenizer, line parser errors (file + line), warnings and first-match semantics."""

import ipaddress

import pytest

from pgpool.auth.hba import HbaConfig, HbaError, HbaToken, load_hba, load_hba_logged, parse_hba_text

FILE = "/etc/pgpool2/pool_hba.conf"


def parse(text, **kw):
    return parse_hba_text(text, FILE, **kw)


# ---- parse errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("line, message", [
    ("foo all all trust", 'invalid connection type "foo"'),
    ("local,host all all trust", "multiple values specified for connection type"),
    ("local", "end-of-line before database specification"),
    ("local all", "end-of-line before role specification"),
    ("local all all", "end-of-line before authentication method"),
    ("host all all", "end-of-line before IP address specification"),
    ("host all all 10.0.0.0/33 trust", 'invalid CIDR mask in address "10.0.0.0/33"'),
    ("host all all 10.0.0.0/x trust", 'invalid CIDR mask in address "10.0.0.0/x"'),
    ("host all all ::1/129 trust", 'invalid CIDR mask in address "::1/129"'),
    ("host all all 10.0.0.1", "end-of-line before netmask specification"),
    ("host all all 10.0.0.1 255.0.0.0", "end-of-line before authentication method"),
    ("host all all 10.0.0.1 ffff:: trust", "IP address and mask do not match"),
    ("host all all 10.0.0.1 notamask trust", 'invalid IP mask "notamask"'),
    ("host all all 10.0.0.1 255.0.0.0,255.255.0.0 trust", "multiple values specified for netmask"),
    ("host all all db.example.com/24 trust", 'specifying both host name and CIDR mask is invalid: "db.example.com/24"'),
    ("host all all 1.2.3.4/32,5.6.7.8/32 trust", "multiple values specified for host address"),
    ("local all all foo", 'invalid authentication method "foo"'),
    ("local all all ident", 'invalid authentication method "ident"'),
    ("local all all gss", 'invalid authentication method "gss"'),
    ("local all all trust,md5", "multiple values specified for authentication type"),
    ("local all all trust foo", "authentication option not in name=value format: foo"),
    ("local all all trust foo=bar", 'unrecognized authentication option name: "foo"'),
    ("local all all md5 ldapserver=x",
     'authentication option "ldapserver" is only valid for authentication methods ldap'),
    ("local all all ldap ldapport=abc", 'invalid LDAP port number: "abc"'),
    ("local db1 ,db2 all trust", 'invalid authentication method "all"'),   # " ," ends the field
    ("local " + "x" * 300 + " all trust", "authentication file token too long"),
    ("local all all @missing_file", 'could not open secondary authentication file "@missing_file" as '
                                    '"/etc/pgpool2/missing_file"'),
])
def test_parse_errors_name_file_and_line(line, message):
    with pytest.raises(HbaError) as info:
        parse("# header\n\n" + line + "\n")
    [error] = info.value.errors
    assert error.message.startswith(message)
    assert (error.filename, error.line_number) == (FILE, 3)
    assert str(error).startswith(message)
    assert f'line 3 of configuration file "{FILE}"' in str(error)


def test_every_bad_line_is_reported():
    with pytest.raises(HbaError) as info:
        parse("bogus all all trust\nlocal all all trust\nlocal all all nope\n")
    assert [(e.line_number, e.message) for e in info.value.errors] == [
        (1, 'invalid connection type "bogus"'), (3, 'invalid authentication method "nope"')]


@pytest.mark.parametrize("text", ["", "# only comments\n   \n\t\n"])
def test_empty_file_is_an_error(text):
    with pytest.raises(HbaError, match=f'configuration file "{FILE}" contains no entries'):
        parse(text)


def test_missing_file(tmp_path):
    with pytest.raises(HbaError, match="could not open configuration file"):
        load_hba(tmp_path / "nope.conf")


# ---- warnings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("line, warning, ssl", [
    ("hostssl all all 0.0.0.0/0 md5", "hostssl record cannot match because SSL is disabled", False),
    ("local all all md5 pamservice=x", 'pamservice authentication option can only be configured for '
                                       'authentication method "pam"', False),
    ("local samerole all trust", 'group tokens "samegroup" and "samerole" are not supported by Pgpool-II', False),
    ("local all +admins trust", 'group token "+" is not supported by Pgpool-II', False),
])
def test_warnings(line, warning, ssl):
    cfg = parse(line + "\n", ssl_enabled=ssl)
    assert len(cfg.rules) == 1
    assert [(w.line_number, w.message) for w in cfg.warnings] == [(1, warning)]


def test_no_warning_for_hostssl_with_ssl_on():
    assert parse("hostssl all all 0.0.0.0/0 md5\n", ssl_enabled=True).warnings == []


# ---- tokenizer and fields ------------------------------------------------------------------------

@pytest.mark.parametrize("line, databases, users", [
    ("local db1,db2 alice trust", [("db1", False), ("db2", False)], [("alice", False)]),
    ("local db1, db2 alice trust", [("db1", False), ("db2", False)], [("alice", False)]),
    ('local "my db" "all" trust', [("my db", True)], [("all", True)]),
    ('local "a""b" x trust', [('a"b', True)], [("x", False)]),
    ('local "@file" x trust', [("@file", True)], [("x", False)]),
    ("local @ x trust", [("@", False)], [("x", False)]),
    ("local all all trust # a comment", [("all", False)], [("all", False)]),
    ("local all all trust#comment", [("all", False)], [("all", False)]),
    ('local "" x trust', [("", True)], [("x", False)]),
])
def test_fields(line, databases, users):
    [rule] = parse(line + "\n").rules
    assert [(t.value, t.quoted) for t in rule.databases] == databases
    assert [(t.value, t.quoted) for t in rule.users] == users
    assert rule.method == "trust"


def test_options_and_methods():
    cfg = parse("local all all pam pamservice=pgpool pam_use_hostname=1\n"
                'host all all 0.0.0.0/0 ldap ldapserver=ldap.example.net "ldapprefix=cn=" ldapport=389\n'
                "local all all scram-sha-256\nlocal all all cert\nlocal all all password\nlocal all all reject\n")
    assert [r.method for r in cfg.rules] == ["pam", "ldap", "scram-sha-256", "cert", "password", "reject"]
    assert cfg.rules[0].options == {"pamservice": "pgpool", "pam_use_hostname": "1"}
    assert cfg.rules[1].options == {"ldapserver": "ldap.example.net", "ldapprefix": "cn=", "ldapport": "389"}


@pytest.mark.parametrize("address, mask", [
    ("127.0.0.1/32", "255.255.255.255"),
    ("10.0.0.0/8", "255.0.0.0"),
    ("127.1/32", "255.255.255.255"),          # inet_aton forms are numeric too (getaddrinfo)
    ("::1/128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("fe80::7a31:c1ff:0000:0000/96", "ffff:ffff:ffff:ffff:ffff:ffff::"),
    ("0.0.0.0/0", "0.0.0.0"),
    ("10.0.0.1 255.255.0.0", "255.255.0.0"),
])
def test_addresses(address, mask):
    [rule] = parse(f"host all all {address} md5\n").rules
    assert rule.mask == ipaddress.ip_address(mask)
    assert rule.hostname is None and rule.address_keyword is None


def test_includes(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "users").write_text("alice\nbob, carol # trailing comment\n@sub/more\n")
    (tmp_path / "sub" / "more").write_text('"dave x"\n')
    (tmp_path / "dbs with space").write_text("db1 db2\n")
    (tmp_path / "pool_hba.conf").write_text('local @"dbs with space",db3 @users md5\n')
    [rule] = load_hba(tmp_path / "pool_hba.conf").rules
    assert [t.value for t in rule.databases] == ["db1", "db2", "db3"]
    assert rule.users == (HbaToken("alice"), HbaToken("bob"), HbaToken("carol"), HbaToken("dave x", True))


def test_include_loop_is_an_error(tmp_path):
    (tmp_path / "loop").write_text("@loop\n")
    (tmp_path / "pool_hba.conf").write_text("local all @loop trust\n")
    with pytest.raises(HbaError, match="nested more than"):
        load_hba(tmp_path / "pool_hba.conf")


# ---- matching ------------------------------------------------------------------------------------

RULES = """\
local   sameuser      all                               trust
local   db1,db2       alice,"all"                       md5
host    all           all       127.0.0.1/32            trust
hostssl all           all       10.0.0.0/8              scram-sha-256
hostnossl all         all       10.0.0.0/8              password
host    all           all       192.168.1.0 255.255.255.0  md5
host    all           +admins,x 0.0.0.0/0               reject
host    samerole,all  bob       ::1/128                 trust
host    all           all       ::/0                    md5
host    "all"         carol     all                     cert
host    all           all       samehost                pam
host    all           all       .example.com            md5
host    all           all       samenet                 password
"""

INTERFACES = [(ipaddress.ip_address("172.16.0.5"), ipaddress.ip_address("255.255.0.0")),
              (ipaddress.ip_address("fe80::1"), ipaddress.ip_address("ffff:ffff:ffff:ffff::"))]
HOSTNAMES = {"172.16.3.4": "Db.Example.COM", "172.16.3.5": "example.com"}


@pytest.fixture(scope="module")
def hba():
    cfg = parse(RULES, ssl_enabled=True)
    return HbaConfig(cfg.rules, cfg.warnings, interfaces=lambda: INTERFACES,
                     resolve_hostname=lambda ip: HOSTNAMES.get(str(ip)))


@pytest.mark.parametrize("conn, ssl, addr, db, user, line", [
    ("local", False, None, "alice", "alice", 1),          # sameuser
    ("local", False, None, "db1", "alice", 2),
    ("local", False, None, "db2", "all", 2),              # quoted "all": the user named all
    ("local", False, None, "db1", "bob", None),
    ("local", False, None, "other", "alice", None),
    ("host", False, "127.0.0.1", "db", "u", 3),
    ("host", True, "127.0.0.1", "db", "u", 3),            # host matches SSL and non-SSL
    ("host", True, "10.1.2.3", "db", "u", 4),
    ("host", False, "10.1.2.3", "db", "u", 5),
    ("host", False, "192.168.1.77", "db", "u", 6),
    ("host", False, "192.168.2.1", "db", "x", None),      # "+admins" first in the list: never matches
    ("host", False, "::1", "db", "bob", 9),               # samerole line never matches
    ("host", False, "::ffff:127.0.0.1", "db", "u", 9),    # IPv4-mapped is IPv6 for pool_hba
    ("host", False, "8.8.8.8", "all", "carol", 10),       # quoted "all": the database named all
    ("host", False, "8.8.8.8", "db", "carol", None),
    ("host", False, "172.16.0.5", "db", "u", 11),         # samehost
    ("host", False, "172.16.3.4", "db", "u", 12),         # host name suffix, case-insensitive
    ("host", False, "172.16.3.5", "db", "u", 13),         # ".example.com" does not match "example.com"
    ("host", False, "172.16.9.9", "db", "u", 13),         # samenet
    ("host", False, "fe80::1%eth0", "db", "u", 9),
    ("host", False, "8.8.4.4", "db", "u", None),
])
def test_match(hba, conn, ssl, addr, db, user, line):
    rule = hba.match(conn, ssl, addr, db, user)
    assert (rule.line_number if rule else None) == line


def test_match_rejects_bad_conn_type(hba):
    with pytest.raises(ValueError):
        hba.match("hostssl", True, "127.0.0.1", "db", "u")


def test_hostname_rule_exact():
    cfg = parse("host all all db.example.com md5\n")
    matcher = HbaConfig(cfg.rules, resolve_hostname=lambda ip: "DB.example.com" if str(ip) == "10.0.0.1" else None)
    assert matcher.match("host", False, "10.0.0.1", "d", "u").hostname == "db.example.com"
    assert matcher.match("host", False, "10.0.0.2", "d", "u") is None


def test_default_interfaces_include_loopback():
    cfg = parse("host all all samehost trust\nhost all all samenet md5\n")
    assert cfg.match("host", False, "127.0.0.1", "d", "u").line_number == 1
    assert cfg.match("host", False, "127.0.0.2", "d", "u").line_number == 2


# ---- loading at start and on reload -------------------------------------------------------------

def test_pam_service_default_and_option():
    cfg = parse("local all all pam\nlocal all all pam pamservice=mysvc\n")
    assert [r.pam_service for r in cfg.rules] == ["pgpool", "mysvc"]


def test_reload_keeps_previous_rules_on_error(tmp_path, capfd):
    path = tmp_path / "pool_hba.conf"
    path.write_text("local all all trust\nhostssl all all 0.0.0.0/0 md5\n")
    first = load_hba_logged(path, False, None)
    assert [r.method for r in first.rules] == ["trust", "md5"]
    assert "hostssl record cannot match because SSL is disabled" in capfd.readouterr().err
    path.write_text("local all all md5\nhost all all 10.0.0.0/33 trust\nlocal all all bogus\n")
    assert load_hba_logged(path, False, first) is first
    err = capfd.readouterr().err
    assert 'invalid CIDR mask in address "10.0.0.0/33"' in err
    assert f'line 2 of configuration file "{path}"' in err
    assert f'line 3 of configuration file "{path}"' in err
    assert "the previous pool_hba.conf rules stay in force" in err
    assert load_hba_logged(tmp_path / "missing.conf", False, None) is None
    assert "every client is refused" in capfd.readouterr().err
