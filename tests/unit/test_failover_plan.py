"""The failover planner (pgpool/ha/plan.py): what each node request does, table-driven.

Log texts, escapes and decisions follow pgpool-II 4.3.5's failover(); several rows reproduce what
the real binary logged on a primary + 2 standbys cluster (detaching the last live node, failback
with every node down, promote, promote -s).
"""

import pytest

from pgpool.ha import plan as P
from pgpool.state import shm as S

STATUS = {"U": S.CON_UP, "W": S.CON_CONNECT_WAIT, "D": S.CON_DOWN}
PID = 4242


def table(statuses="UUU", primary=0, main=0, mode=P.STREAMING, disallow=(), always=(),
          failover="fo %d %m %M %P", failback="fb %d %m %M %P", follow="", follow_ongoing=False):
    nodes = tuple(P.Node(i, STATUS[c], f"h{i}", 5000 + i, f"/d{i}", allow_failover=i not in disallow,
                         always_primary=i in always) for i, c in enumerate(statuses))
    return P.Table(nodes, primary, main, mode, failover, failback, follow, follow_ongoing)


def down(node, flags=S.REQ_FLAG_PCP):
    return P.Request(S.REQ_NODE_DOWN, node, flags, PID)


def up(node):
    return P.Request(S.REQ_NODE_UP, node, S.REQ_FLAG_PCP, PID)


def promote(node):
    return P.Request(S.REQ_PROMOTE, node, S.REQ_FLAG_PCP, PID)


PARTIAL_2 = ("Do not restart children because we are switching over node id 2 host: h2 port: 5002 "
             "and we are in streaming replication mode")
NO_RESTART_2 = ("Do not restart children because we are failing back node id 2 host: h2 port: 5002 and "
                "we are in streaming replication mode and not all backends were down")


# Each row: table, request, expected fields of the Plan.
CASES = {
    "standby down: nobody restarted, primary kept": (
        table(), down(2),
        dict(down=(2,), new_main=0, commands=("fo 2 0 0 0",), primary=0, restart=P.RESTART_NONE,
             restart_log=PARTIAL_2, logs=("starting degeneration. shutdown host h2(5002)",))),
    "standby down after a health check timeout: every worker": (
        table(), down(2, S.REQ_FLAG_HEALTH_CHECK | P.REQ_FLAG_FULL_RESTART),
        dict(down=(2,), primary=0, restart=P.RESTART_ALL, restart_log="Restart all children")),
    "primary down: search the new primary, every worker": (
        table(), down(0),
        dict(down=(0,), new_main=1, commands=("fo 0 1 0 0",), primary=None, restart=P.RESTART_ALL)),
    "primary that is not the main node down: every worker too": (
        table(primary=1), down(1),
        dict(down=(1,), new_main=0, commands=("fo 1 0 0 1",), primary=None, restart=P.RESTART_ALL)),
    "last live node down: allowed, no main node (as pgpool-II)": (
        table("UDD"), down(0),
        dict(down=(0,), new_main=-1, commands=("fo 0 -1 0 0",), primary=None,
             logs=("starting degeneration. shutdown host h0(5000)", "failover: no valid backend node found"))),
    "standby down when there is no primary: the main node counts as primary": (
        table(primary=-1, main=1, statuses="DUU"), down(1),
        dict(down=(1,), new_main=2, commands=("fo 1 2 1 -1",), primary=None, restart=P.RESTART_ALL)),
    "promote -s: the primary is detached, %m is the node to promote": (
        table(), down(2, S.REQ_FLAG_PCP | S.REQ_FLAG_SWITCHOVER),
        dict(node=0, down=(0,), new_main=1, commands=("fo 0 2 0 0",), promote_node=2, primary=None,
             restart=P.RESTART_ALL, logs=("starting degeneration. shutdown host h0(5000)",))),
    "no failover_command configured": (
        table(failover=""), down(2), dict(down=(2,), commands=())),
    "native replication: the main node is the primary, every worker": (
        table(mode="native_replication"), down(0),
        dict(down=(0,), new_main=1, primary=1, restart=P.RESTART_ALL)),
    "failback of a standby: no worker restarted, roles searched again": (
        table("UUD"), up(2),
        dict(up=2, new_main=0, commands=("fb 2 0 0 0",), primary=None, restart=P.RESTART_NONE,
             restart_log=NO_RESTART_2, logs=("starting fail back. reconnect host h2(5002)",))),
    "failback while every node is down (pgpool-II: m=2 M=0 P=0)": (
        table("DDD", primary=-1, main=0), up(2),
        dict(up=2, new_main=2, commands=("fb 2 2 0 0",), restart=P.RESTART_ALL)),
    "failback after a promote (pgpool-II: m=0 M=1 P=1)": (
        table("DUD", primary=1, main=1), up(0),
        dict(up=0, new_main=0, commands=("fb 0 0 1 1",), restart=P.RESTART_NONE)),
    "failback of a waiting node's neighbour keeps waiting nodes valid": (
        table("WUD"), up(2), dict(up=2, new_main=0, restart=P.RESTART_NONE)),
    "promote: relabel only, every worker": (
        table(), promote(1),
        dict(primary=1, new_main=0, commands=(), restart=P.RESTART_ALL,
             logs=("starting promotion. promote host h1(5001)",))),
}


@pytest.mark.parametrize("name", CASES)
def test_plan_request(name):
    tbl, req, expected = CASES[name]
    plan = P.plan_request(tbl, req)
    assert plan.refused == ""
    for field, value in expected.items():
        assert getattr(plan, field) == value, field


@pytest.mark.parametrize("tbl, req, message", [
    (table("UUD"), down(2), "failover: no backends are degenerated"),
    (table(), down(5), "failover: no backends are degenerated"),
    (table(disallow=(1,)), down(1),
     f"degenerate backend request for node_id: 1 from pid [{PID}] is canceled because failover is "
     "disallowed on the node"),
    (table(primary=-1), down(2, S.REQ_FLAG_PCP | S.REQ_FLAG_SWITCHOVER), "failover: no backends are degenerated"),
    (table(), up(1), "invalid failback request, status: [2] of node id : 1 is invalid for failback"),
    (table(), up(5), "invalid failback request, status: [0] of node id : 5 is invalid for failback"),
    (table(), up(200), "invalid failback request, node id: 200 is invalid. node id must be between [0 and 128]"),
    (table("UDU"), promote(1), "failover: no backends are promoted"),
    (table(mode="raw"), promote(1), "failover: no backends are promoted"),
])
def test_refusals(tbl, req, message):
    plan = P.plan_request(tbl, req)
    assert plan.refused == message
    assert (plan.down, plan.up, plan.commands) == ((), -1, ())


@pytest.mark.parametrize("tbl, node, message", [
    (table(), -1, "invalid degenerate backend request, node id: -1 is out of range. node id must be "
                  "between [0 and 128]"),
    (table(), 128, "invalid degenerate backend request, node id: 128 is out of range. node id must be "
                   "between [0 and 128]"),
    (table("UDU"), 1, "invalid degenerate backend request, node id : 1 status: [3] is not valid for failover"),
    (table(disallow=(2,)), 2, f"degenerate backend request for node_id: 2 from pid [{PID}] is canceled "
                              "because failover is disallowed on the node"),
    (table("UWU"), 1, ""),
    # raw mode: only the main node may be detached (pgpool-II 4.3.5 answers the same)
    (table(mode="raw"), 1, "invalid degenerate backend request, node id : 1 status: [2] is not valid for failover"),
    (table(mode="raw", main=1, statuses="DUU"), 1, ""),
])
def test_degenerate_refusal(tbl, node, message):
    assert P.degenerate_refusal(tbl, node, PID) == message


FOLLOW = "follow %d %m %M %P"


@pytest.mark.parametrize("before, req, after, new_primary, expected", [
    # the primary failed: every node but the new primary, the old primary included
    (table(follow=FOLLOW), down(0), "DUU", 1,
     P.FollowPlan((0, 2), ("starting follow degeneration. shutdown host h0(5000)",
                           "starting follow degeneration. shutdown host h2(5002)",
                           "failover: 2 follow backends have been degenerated"), True)),
    # ... but no primary was found
    (table(follow=FOLLOW), down(0), "DUU", -1,
     P.FollowPlan((), ("failover: no follow backends are degenerated",), False)),
    # a standby failed: nothing to follow
    (table(follow=FOLLOW), down(2), "UUD", 0, P.FollowPlan()),
    # no primary before, one found after a standby failure
    (table(primary=-1, follow=FOLLOW), down(2), "UUD", 0,
     P.FollowPlan((1, 2), ("starting follow degeneration. shutdown host h1(5001)",
                           "starting follow degeneration. shutdown host h2(5002)",
                           "failover: 2 follow backends have been degenerated"), True)),
    # primary failed without follow_primary_command: nothing
    (table(), down(0), "DUU", 1, P.FollowPlan()),
    # promote without follow_primary_command still marks the others down (pgpool-II)
    (table(), promote(1), "UUU", 1,
     P.FollowPlan((0, 2), ("starting follow degeneration. shutdown host h0(5000)",
                           "starting follow degeneration. shutdown host h2(5002)",
                           "failover: 2 follow backends have been degenerated"), False)),
    (table(follow=FOLLOW), promote(2), "UUU", 2,
     P.FollowPlan((0, 1), ("starting follow degeneration. shutdown host h0(5000)",
                           "starting follow degeneration. shutdown host h1(5001)",
                           "failover: 2 follow backends have been degenerated"), True)),
    # promote -s: the detached primary is followed like a failed one
    (table(follow=FOLLOW), down(2, S.REQ_FLAG_SWITCHOVER), "DUU", 2,
     P.FollowPlan((0, 1), ("starting follow degeneration. shutdown host h0(5000)",
                           "starting follow degeneration. shutdown host h1(5001)",
                           "failover: 2 follow backends have been degenerated"), True)),
    # failback never follows
    (table("UUD", follow=FOLLOW), up(2), "UUW", 0, P.FollowPlan()),
    (table(mode="native_replication", follow=FOLLOW), down(0), "DUU", 1, P.FollowPlan()),
])
def test_plan_follow(before, req, after, new_primary, expected):
    plan = P.plan_request(before, req)
    changes = {i: STATUS[c] for i, c in enumerate(after)}
    assert P.plan_follow(before.with_status(changes), plan, new_primary) == expected


def test_follow_values():
    """follow_primary_command: %m the new primary, %M and %P the old primary (pgpool-II:
    "FOLLOW d=0 m=1 M=0 P=0" after promoting node 1)."""
    v = P.follow_values(node=0, old_primary=0, new_primary=1)
    assert (v.node, v.new_main, v.old_main, v.old_primary) == (0, 1, 0, 0)


@pytest.mark.parametrize("tbl, expected", [
    (table(follow_ongoing=True, primary=1),
     (1, "find_primary_node_repeatedly: follow primary is ongoing. return current primary: 1")),
    (table(always=(2,)), (2, "")),
    (table("DDD"), (-1, "find_primary_node_repeatedly: all of the backends are down. Giving up finding "
                        "primary node")),
    (table("DUW"), (None, "")),
])
def test_search_shortcut(tbl, expected):
    assert P.search_shortcut(tbl) == expected


def test_search_candidates_and_next_main():
    tbl = table("DWU")
    assert P.search_candidates(tbl) == (1, 2)
    assert P.next_main(tbl) == 1
    assert P.next_main(tbl, {1: S.CON_DOWN}) == 2
    assert P.next_main(tbl, {1: S.CON_DOWN, 2: S.CON_DOWN}) == -1


@pytest.mark.parametrize("req, text", [
    (down(2), "failover done. shutdown host h2(5002)"),
    (up(2), "failback done. reconnect host h2(5002)"),
    (promote(1), "promotion done. promoted host h1(5001)"),
])
def test_done_message(req, text):
    tbl = table("UUD") if req.kind == S.REQ_NODE_UP else table()
    assert P.done_message(tbl, P.plan_request(tbl, req)) == text
