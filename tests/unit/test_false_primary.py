"""detach_false_primary's decision (pgpool-II's verify_backend_node_status) and the WAL receiver conninfo it reads."""

import pytest

from pgpool.processes.sr_check import conninfo_target, connects_to, false_primaries, parse_conninfo

# What PostgreSQL 15 shows in pg_stat_wal_receiver.conninfo (secrets obfuscated).
PG15_CONNINFO = ("user=postgres passfile=/var/lib/postgresql/.pgpass channel_binding=prefer "
                 "dbname=replication host=/tmp/pgpool-cluster2 port=5433 application_name=node1 "
                 "fallback_application_name=walreceiver sslmode=prefer sslcompression=0 "
                 "sslsni=1 ssl_min_protocol_version=TLSv1.2 gssencmode=prefer krbsrvname=postgres "
                 "target_session_attrs=any")


@pytest.mark.parametrize("text, expected", [
    ("", {}),
    ("host=h port=5432", {"host": "h", "port": "5432"}),
    ("  host = h   port=1 ", {"host": "h", "port": "1"}),
    ("password=******** host=x", {"password": "********", "host": "x"}),
    ("application_name='my app' host=x", {"application_name": "my app", "host": "x"}),
    (r"application_name='it\'s' host=x", {"application_name": "it's", "host": "x"}),
    (r"application_name='a\\b'", {"application_name": "a\\b"}),
    ("host=''", {"host": ""}),
    (r"host=a\ b", {"host": "a b"}),
])
def test_parse_conninfo(text, expected):
    assert parse_conninfo(text) == expected


@pytest.mark.parametrize("text", ["host", "host=x port", "application_name='open"])
def test_parse_conninfo_rejects(text):
    with pytest.raises(ValueError):
        parse_conninfo(text)


@pytest.mark.parametrize("conninfo, expected", [
    (PG15_CONNINFO, ("/tmp/pgpool-cluster2", 5433)),
    ("host=10.0.0.1 port=5432", ("10.0.0.1", 5432)),
    ("host=db1", ("db1", 5432)),                          # libpq's default port
    ("port=5444", ("", 5444)),                            # default socket directory
    ("host=db1 hostaddr=10.0.0.7 port=1", ("10.0.0.7", 1)),   # libpq connects to hostaddr
    ("host=x port=abc", None),
    ("host", None),
])
def test_conninfo_target(conninfo, expected):
    assert conninfo_target(conninfo) == expected


@pytest.mark.parametrize("backend, target, expected", [
    (("10.0.0.1", 5432), ("10.0.0.1", 5432), True),
    (("10.0.0.1", 5432), ("10.0.0.1", 5433), False),
    (("10.0.0.1", 5432), ("10.0.0.2", 5432), False),
    (("db1", 5432), ("10.0.0.1", 5432), False),         # names are not resolved
    # pgpool-II's own socket cases
    (("/tmp", 5432), ("", 5432), True),
    (("/tmp", 5432), ("localhost", 5432), True),
    (("/tmp", 5432), ("/tmp", 5432), True),
    # and the reverse: the primary configured by loopback address, the standby on its socket
    (("127.0.0.1", 5433), ("/tmp/pgpool-cluster2", 5433), True),
    (("localhost", 5433), ("", 5433), True),
    (("::1", 5433), ("/var/run/postgresql", 5433), True),
    (("127.0.0.1", 5433), ("localhost", 5433), True),
    (("127.0.0.1", 5433), ("/tmp", 5434), False),
    # two different socket directories are two different servers
    (("/tmp", 5432), ("/var/run/postgresql", 5432), False),
    (("10.0.0.1", 5432), ("/tmp", 5432), False),
])
def test_connects_to(backend, target, expected):
    assert connects_to(*backend, *target) is expected


ADDRS = {0: ("127.0.0.1", 5000), 1: ("127.0.0.1", 5001), 2: ("127.0.0.1", 5002),
         3: ("127.0.0.1", 5003)}


def rx(port, status="streaming", host="/tmp/sock"):
    """A pg_stat_wal_receiver row of a standby streaming from the node on `port`."""
    return (status, f"user=postgres host={host} port={port} application_name=x")


@pytest.mark.parametrize("in_recovery, receivers, expected_invalid", [
    # no primary at all: nothing to decide
    ({0: True, 1: True}, {0: None, 1: None}, []),
    ({}, {}, []),
    # one primary, no standby
    ({0: False}, {0: None}, []),
    # several primaries and no standby: the lowest id stays
    ({0: False, 1: False}, {0: None, 1: None}, [1]),
    ({1: False, 2: False, 3: False}, {1: None, 2: None, 3: None}, [2, 3]),
    ({0: False, 2: False}, {0: None, 2: None}, [2]),
    # one primary owning its standby: nothing false
    ({0: False, 1: True}, {0: None, 1: rx(5000)}, []),
    # a promoted standby beside the true primary and a standby still streaming from node 0
    ({0: False, 1: True, 2: False}, {0: None, 1: rx(5000), 2: None}, [2]),
    # the true primary is not node 0: node 0 is the false one
    ({0: False, 1: False, 2: True}, {0: None, 1: None, 2: rx(5001)}, [0]),
    # the true primary must own every standby
    ({0: False, 1: True, 2: True, 3: False},
     {0: None, 1: rx(5000), 2: rx(5000), 3: None}, [3]),
    ({0: False, 1: True, 2: True, 3: False},
     {0: None, 1: rx(5000), 2: rx(5003), 3: None}, []),
    # a standby that does not stream (or hides its conninfo) counts for nobody: no true primary
    ({0: False, 1: True, 2: False}, {0: None, 1: rx(5000, status="stopping"), 2: None}, []),
    ({0: False, 1: True, 2: False}, {0: None, 1: ("streaming", None), 2: None}, []),
    ({0: False, 1: True, 2: False}, {0: None, 1: None, 2: None}, []),
    # an unreadable conninfo counts for nobody either
    ({0: False, 1: True, 2: False}, {0: None, 1: ("streaming", "host='x"), 2: None}, []),
    # a standby following the second primary: each owns one of two, no true primary
    ({0: False, 1: True, 2: False, 3: True},
     {0: None, 1: rx(5000), 2: None, 3: rx(5002)}, []),
    # standbys only connected over TCP to the true primary's address
    ({0: False, 1: True, 2: False}, {0: None, 1: rx(5000, host="127.0.0.1"), 2: None}, [2]),
])
def test_false_primaries(in_recovery, receivers, expected_invalid):
    invalid, _ = false_primaries(in_recovery, receivers, ADDRS)
    assert invalid == expected_invalid


def test_false_primary_log_lines():
    invalid, lines = false_primaries({0: False, 1: True, 2: False}, {0: None, 1: rx(5000), 2: None},
                                     ADDRS)
    assert invalid == [2]
    assert lines == ["verify_backend_node_status: primary 2 does not connect to standby 1",
                     "verify_backend_node_status: primary 2 owns only 0 standbys out of 1"]


def test_single_primary_with_foreign_standby_logs_but_detaches_nothing():
    invalid, lines = false_primaries({0: False, 1: True}, {0: None, 1: rx(5999)}, ADDRS)
    assert invalid == []
    assert lines == ["verify_backend_node_status: primary 0 does not connect to standby 1",
                     "verify_backend_node_status: primary 0 owns only 0 standbys out of 1"]
