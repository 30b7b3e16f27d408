"""pcp_* CLI: option parsing like pgpool-II's getopt_long use, .pcppass matching, output formatting."""

import io
import os
import time

import pytest

from pcp import cli
from pcp import protocol as p
from pcp.client import ArrayResult, password_from_file, pcppass_host, pcppass_lookup, pcppass_match

NODE = p.NodeInfo("localhost", 5432, 2, 0, "up", 1073741823.5, 3, "standby", 0, "streaming", "async",
                  1700000000)


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def parse(tool, *args):
    return cli.parse_args(cli.TOOLS[tool], f"/usr/sbin/{tool}", list(args))


# ---- options --------------------------------------------------------------------------------

def test_defaults_and_long_options():
    opts, warnings = parse("pcp_node_info", "--host=db", "--port", "9999", "-U", "admin", "-w", "--all", "-v", "1")
    assert (opts.host, opts.port, opts.user, opts.need_password, opts.all, opts.verbose, opts.node_id) == \
        ("db", 9999, "admin", False, True, True, 1)
    assert warnings == ""
    opts, _ = parse("pcp_node_count")
    assert (opts.host, opts.port, opts.need_password, opts.node_id) == (None, 9898, True, -1)


@pytest.mark.parametrize("tool,args,attrs", [
    ("pcp_stop_pgpool", ["-m", "fast", "-s", "cluster"], {"mode": "f", "scope": "c"}),
    ("pcp_stop_pgpool", ["--mode=i"], {"mode": "i", "scope": "l"}),
    ("pcp_reload_config", ["-s", "c"], {"scope": "c"}),
    ("pcp_promote_node", ["-s", "-g", "2"], {"switchover": True, "gracefully": True, "node_id": 2}),
    ("pcp_promote_node", ["--switchover", "-n", "1"], {"switchover": True, "node_id": 1}),
    ("pcp_detach_node", ["-g", "-n1"], {"gracefully": True, "node_id": 1}),
    ("pcp_proc_info", ["-P", "42", "-a"], {"process_id": 42, "all": True}),
    ("pcp_proc_info", ["42"], {"process_id": 42}),
    ("pcp_watchdog_info", ["--watchdog-id", "3"], {"node_id": 3}),
    ("pcp_health_check_stats", ["-dv", "0"], {"debug": True, "verbose": True, "node_id": 0}),
])
def test_tool_options(tool, args, attrs):
    opts, _ = parse(tool, *args)
    assert {k: getattr(opts, k) for k in attrs} == attrs


@pytest.mark.parametrize("argv,code,stderr", [
    (["pcp_foo"], 1, "pcp_foo is a invalid PCP utility\n"),
    (["/usr/sbin/pcp_node_count", "-x"], 1,
     "/usr/sbin/pcp_node_count: invalid option -- 'x'\nTry \"pcp_node_count --help\" for more information.\n\n"),
    (["pcp_node_count", "--no=3"], 1, "pcp_node_count: option '--no=3' is ambiguous; possibilities: "
     "'--no-password' '--node-id'\nTry \"pcp_node_count --help\" for more information.\n\n"),
    (["pcp_node_count", "--verbose=1"], 1, "pcp_node_count: option '--verbose' doesn't allow an argument\n"
     "Try \"pcp_node_count --help\" for more information.\n\n"),
    (["pcp_node_count", "-p"], 1, "pcp_node_count: option requires an argument -- 'p'\n"
     "Try \"pcp_node_count --help\" for more information.\n\n"),
    (["pcp_node_count", "-w", "-p", "1024"], 0,
     'pcp_node_count: Invalid port number "1024", must be between 1024 and 65535\n'),
    (["pcp_attach_node", "-w"], 1, "pcp_attach_node: missing node-id\nTry \"pcp_attach_node --help\" for more "
     "information.\n\n"),
    (["pcp_attach_node", "-w", "200"], 0, 'pcp_attach_node: Invalid node-id "(null)", must be between 0 and 128\n'),
    (["pcp_attach_node", "-n", "-1"], 0, 'pcp_attach_node: Invalid node-id "-1", must be between 0 and 128\n'),
    (["pcp_proc_info", "-P", "0"], 0, 'pcp_proc_info: Invalid process-id "0", must be greater than 0\n'),
    (["pcp_stop_pgpool", "-m", "x"], 1,
     'pcp_stop_pgpool: Invalid shutdown mode "x", must be either "smart" "immediate" or "fast" \n'),
    (["pcp_reload_config", "-s", "x"], 1,
     'pcp_reload_config: Invalid command scope "x", must be either "cluster" or "local" \n'),
    (["pcp_node_count", "--mode=fast"], 1, 'Invalid argument "fast", Try "pcp_node_count --help" for more information.\n'),
    (["pcp_node_count", "-V"], 0, "pcp_node_count (pgpool-II) 4.3.5\n"),
    (["pcp_node_count", "-v", "--help"], 1, 'Try "pcp_node_count --help" for more information.\n\n'),
])
def test_argument_errors(argv, code, stderr):
    assert run(*argv) == (code, "", stderr)


def test_help_text():
    code, out, err = run("pcp_watchdog_info", "--help")
    assert (code, out) == (0, "")
    assert err.startswith("pcp_watchdog_info - display a pgpool-II watchdog's information\nUsage:\n"
                          "pcp_watchdog_info [OPTION...] [watchdog-id]\nOptions:\n")
    assert err.endswith("  -?, --help             print this help\n\n")
    assert "pcp_node_info [OPTION...] \n" in run("pcp_node_info", "-?")[2]


def test_extra_argument_warning():
    _, warnings = parse("pcp_node_count", "stray")
    assert warnings == 'pcp_node_count: Warning: extra command-line argument "stray" ignored\n'


def test_connection_refused_message(tmp_path):
    code, out, err = run("pcp_node_count", "-w", "-h", str(tmp_path), "-p", "1100")
    assert (code, out) == (1, "")
    assert err == f'ERROR: connection to socket "{tmp_path}/.s.PGSQL.1100" failed with error "No such file or directory"\n'


# ---- .pcppass -------------------------------------------------------------------------------

@pytest.mark.parametrize("lines,host,port,user,password", [
    (["*:*:postgres:secret"], "localhost", "9898", "postgres", "secret"),
    (["db:9898:postgres:one", "*:*:*:two"], "db", "9898", "postgres", "one"),
    (["db:9898:postgres:one", "*:*:*:two"], "other", "9898", "postgres", "two"),
    (["db:9899:postgres:one"], "db", "9898", "postgres", None),
    ([r"h\:x:9898:u:p\:w\\d:ignored"], "h:x", "9898", "u", r"p:w\d"),
    (["localhost:*:u"], "localhost", "1", "u", None),
    (["dbx:*:u:p"], "db", "1", "u", None),
])
def test_pcppass_lookup(lines, host, port, user, password):
    assert pcppass_lookup(lines, host, port, user) == password


def test_pcppass_field_match():
    assert pcppass_match("*:rest", "anything") == "rest"
    assert pcppass_match("abc:rest", "abc") == "rest"
    assert pcppass_match("abc:rest", "ab") is None


@pytest.mark.parametrize("host,name", [(None, "localhost"), ("", "localhost"), ("/tmp", "localhost"),
                                       ("/var/run/postgresql", "/var/run/postgresql"), ("db1", "db1")])
def test_pcppass_host_name(host, name):
    assert pcppass_host(host) == name


def test_pcppass_file_permissions(tmp_path, monkeypatch):
    path = tmp_path / "pass"
    path.write_text("localhost:9898:u:secret\n")
    monkeypatch.setenv("PCPPASSFILE", str(path))
    path.chmod(0o600)
    assert password_from_file(None, 9898, "u") == "secret"
    assert password_from_file("127.0.0.1", 9898, "u") is None
    path.chmod(0o640)
    debug = io.StringIO()
    assert password_from_file(None, 9898, "u", debug) is None
    assert debug.getvalue() == (f'WARNING: password file "{path}" has group or world access; '
                                "permissions should be u=rw (0600) or less\n")
    monkeypatch.setenv("PCPPASSFILE", str(tmp_path))
    assert password_from_file(None, 9898, "u", debug) is None
    assert "is not a plain file" in debug.getvalue()
    assert password_from_file(None, 9898, "") is None


# ---- output formatting ----------------------------------------------------------------------

def opts(**kw):
    return cli.Options(**kw)


def test_node_count_output():
    assert cli.format_node_count(2, opts()) == "2\n"
    assert cli.format_node_count(2, opts(verbose=True)) == "Node Count\n____________\n 2\n"


def test_node_info_output():
    changed = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1700000000))
    result = ArrayResult(2, [NODE, p.NodeInfo("", 0, 0, 0, "unknown", 0.0, 3, "unknown", 0, "", "", 0)])
    assert cli.format_node_info(result, opts()) == \
        f"localhost 5432 2 0.500000 up up standby standby 0 streaming async {changed}\n"
    with_all = cli.format_node_info(result, opts(all=True)).splitlines()
    assert with_all[1].startswith(" 0 0 0.000000 unused unknown standby unknown 0 none none ")
    verbose = cli.format_node_info(ArrayResult(1, [NODE]), opts(verbose=True))
    assert verbose.startswith("Hostname               : localhost\nPort                   : 5432\n")
    assert verbose.endswith(f"Last Status Change     : {changed}\n\n")
    assert cli.format_node_info(ArrayResult(1, [result.items[1]]), opts()) == "No node information available\n\n"
    quarantined = p.NodeInfo("h", 1, 3, 1, "up", 0.0, 1, "replica", 0, "", "", 0)
    assert cli.status_name(quarantined) == "quarantine"


def test_proc_count_output():
    assert cli.format_process_count([11, 12], opts()) == "11 12 \n"
    assert cli.format_process_count([11], opts(verbose=True)) == \
        "No \t | \t PID\n_____________________\n0 \t | \t 11\n\nTotal Processes:1\n"


def test_proc_info_output():
    row = p.ProcessInfo("100", "2024-01-01 10:00:00", "1", "0", "0", "db", "alice", "t1", "t2", "", "0", "3", "0",
                        "1", "200", "1", "Idle")
    empty = p.ProcessInfo("100", "2024-01-01 10:00:00", "0", "1", "0", "", "", "", "", "", "0", "0", "0", "0",
                          "0", "0", "Idle")
    result = ArrayResult(2, [row, empty])
    assert cli.format_process_info(result, opts()) == "db alice 2024-01-01 10:00:00 1 3 0 t1 t2 0  1 200 1 100 0 Idle\n"
    assert cli.format_process_info(result, opts(all=True)).splitlines()[1] == \
        "  2024-01-01 10:00:00 0 0 0   0  0 0 0 100 0 Idle"
    assert cli.format_process_info(ArrayResult(1, [empty]), opts()) == "No process information available\n\n"
    verbose = cli.format_process_info(ArrayResult(1, [row]), opts(verbose=True))
    assert verbose.startswith("Database                  : db\n")
    assert verbose.endswith("Status                    : Idle\n\n")


def test_pool_status_output():
    result = ArrayResult(2, [p.ConfigItem("a", "1", "first")])
    assert cli.format_pool_status(result, opts()) == "name : a\nvalue: 1\ndesc : first\n\n****Data at 1 slot is NULL\n"
    assert cli.format_pool_status(result, opts(verbose=True)) == (
        "Name [  0]:\ta\nValue:      \t1\nDescription:\tfirst\n\n"
        "Name [  1]:\tNULL\nValue:      \tNULL\nDescription:\tNULL\n\n")


def test_health_check_stats_output():
    stats = p.HealthCheckStats(*(["0", "h", "5432", "up", "primary", ""] + ["1"] * 14))
    assert cli.format_health_check_stats(stats, opts()) == "0 h 5432 up primary  " + " ".join(["1"] * 14) + "\n"
    verbose = cli.format_health_check_stats(stats, opts(verbose=True))
    assert verbose.startswith("Node Id                       : 0\n")
    assert "Last Status Change            : \n" in verbose


def test_watchdog_output():
    node = p.WatchdogNode(0, "n1", "h1", "10.0.0.1", 9000, 9999, 4, "LEADER", 1, 1, "MEMBER")
    info = p.WatchdogInfo(1, 1, 2, 1, 1, True, "n1", "h1", [node])
    assert cli.format_watchdog_info(info, opts()) == "2 2 YES n1 h1\n\nn1 h1 9999 9000 4 LEADER 1 MEMBER\n"
    verbose = cli.format_watchdog_info(info, opts(verbose=True))
    assert verbose.startswith("Watchdog Cluster Information \nTotal Nodes              : 2\n")
    assert "Quorum state             : QUORUM EXIST\n" in verbose
    assert verbose.endswith("Membership Status : MEMBER\n\n")


def test_emptiness_rule():
    assert ArrayResult().is_empty
    assert ArrayResult(1, []).is_empty and not ArrayResult(1, [NODE]).is_empty
    assert not ArrayResult(3, []).is_empty


def test_console_scripts_declared():
    setup_cfg = open(os.path.join(os.path.dirname(__file__), "..", "..", "setup.cfg")).read()
    for name in cli.TOOLS:
        assert f"{name} = pcp.cli:main" in setup_cfg
