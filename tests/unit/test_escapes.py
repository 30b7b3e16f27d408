"""%-escapes of failover_command / failback_command / follow_primary_command (pgpool/ha/escapes.py).

Expected texts follow pgpool-II 4.3.5, checked against the real binary: e.g. with node 0 detached
as the last live node it ran `echo ... m=-1 H="" r="" R="" M=0 P=0 ... x= pct=% end=` for the
template `... m=%m H=%H r=%r R=%R M=%M P=%P ... x=%x pct=%% end=%`.
"""

import pytest

from pgpool.ha.escapes import EscapeValues, NodeAddress, expand

NODES = [NodeAddress("db0", 5432, "/data/0"), NodeAddress("db1", 5433, "/data/1"),
         NodeAddress("db2", 5434, "")]


@pytest.mark.parametrize("template, values, expected", [
    # every escape, for a standby failure (node 2 down, main 0, primary 0)
    ("%d %h %p %D", (2, 0, 0, 0), "2 db2 5434 "),
    ("%m %H %r %R", (2, 0, 0, 0), "0 db0 5432 /data/0"),
    ("%M %P %N %S", (2, 1, 0, 1), "0 1 db1 5433"),
    ("100%%", (0, 0, 0, 0), "100%"),
    # no new main / no old primary: -1 and "" (two double quotes) for its host, port, directory
    ("m=%m H=%H r=%r R=%R", (0, -1, 0, 0), 'm=-1 H="" r="" R=""'),
    ("P=%P N=%N S=%S", (1, 0, 0, -1), 'P=-1 N="" S=""'),
    # an id past the configured backends is as missing
    ("%H/%r/%R", (0, 7, 0, 0), '""/""/""'),
    # unknown escapes and a trailing lone % print nothing
    ("a%xb%qc", (0, 0, 0, 0), "abc"),
    ("end=%", (0, 0, 0, 0), "end="),
    ("%", (0, 0, 0, 0), ""),
    ("%%%d", (1, 0, 0, 0), "%1"),
    # text without escapes is kept as is, quotes and all
    ("/bin/failover.sh 'x y' \"z\"", (0, 0, 0, 0), "/bin/failover.sh 'x y' \"z\""),
    ("", (0, 0, 0, 0), ""),
])
def test_expand(template, values, expected):
    assert expand(template, NODES, EscapeValues(*values)) == expected


def test_pgpool_failover_sample_line():
    """The argument list of pgpool-II's failover.sh.sample."""
    template = "/etc/pgpool2/failover.sh %d %h %p %D %m %H %M %P %r %R %N %S"
    line = expand(template, NODES, EscapeValues(node=0, new_main=1, old_main=0, old_primary=0))
    assert line == "/etc/pgpool2/failover.sh 0 db0 5432 /data/0 1 db1 0 0 5433 /data/1 db0 5432"
