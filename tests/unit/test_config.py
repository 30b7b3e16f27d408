"""Unit tests of the pgpool.conf settings table and parser: lines -> values or the exact error."""

import glob
import os
import re

import pytest

from pgpool.config import SETTINGS, Config, ConfigError, load_config, parse_config_text, setting
from pgpool.config.files import PcpConfError, parse_pcp_conf, read_pgpool_node_id
from pgpool.config.sample import generate, render_value

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "sample", "pgpool.conf.sample")


def parse(text):
    return parse_config_text(text, "t.conf")


# --- the table ---------------------------------------------------------------------------------------------

def test_table_covers_pgpool_43():
    assert len([s for s in SETTINGS.values() if not s.extension]) == 167
    for name in ("backend_clustering_mode", "socket_dir", "pcp_socket_dir", "health_check_test", "delegate_IP",
                 "wd_monitoring_interfaces_list", "log_file_mode", "ssl_passphrase_command"):
        assert name in SETTINGS
    assert {s.name for s in SETTINGS.values() if s.context == "session" and not s.extension} == {
        "log_statement", "log_per_node_statement", "log_client_messages", "check_unlogged_table",
        "allow_sql_comments", "client_idle_limit", "client_idle_limit_in_recovery", "log_error_verbosity",
        "client_min_messages", "log_min_messages"}
    assert {s.name for s in SETTINGS.values() if s.per_node} == {
        "backend_hostname", "backend_port", "backend_weight", "backend_data_directory", "backend_flag",
        "backend_application_name", "health_check_period", "health_check_timeout", "health_check_user",
        "health_check_password", "health_check_database", "health_check_max_retries", "health_check_retry_delay",
        "connect_timeout", "hostname", "wd_port", "pgpool_port", "heartbeat_hostname", "heartbeat_port",
        "heartbeat_device"}


@pytest.mark.parametrize("name,type_,default,context,unit", [
    ("port", "int", 9999, "init", None),
    ("num_init_children", "int", 32, "init", None),
    ("child_life_time", "int", 300, "init", "s"),
    ("connect_timeout", "int", 10000, "reload", "ms"),
    ("log_rotation_age", "int", 1440, "init", "min"),
    ("log_rotation_size", "int", 10240, "init", "kB"),
    ("memqcache_total_size", "int", 67108864, "init", "B"),
    ("load_balance_mode", "bool", True, "init", None),
    # 4.3.5's code says on, its manual off: we follow the manual (README, differences)
    ("failover_on_backend_shutdown", "bool", False, "reload", None),
    ("disable_load_balance_on_write", "enum", "transaction", "reload", None),
    ("log_min_messages", "enum", "warning", "session", None),
    ("reset_query_list", "list", "ABORT;DISCARD ALL", "reload", None),
    ("backend_weight", "real", 0, "reload", None),
    ("log_line_prefix", "string", "%m: %a pid %p: ", "reload", None),
])
def test_table_entries(name, type_, default, context, unit):
    s = setting(name)
    assert (s.type, s.default, s.context, s.unit) == (type_, default, context, unit)


def test_enum_values_as_pgpool_accepts():
    assert setting("backend_clustering_mode").enum_names == (
        "streaming_replication", "native_replication", "logical_replication", "slony", "raw", "snapshot_isolation")
    assert setting("disable_load_balance_on_write").enum_names == (
        "off", "transaction", "trans_transaction", "always", "dml_adaptive")
    assert setting("check_temp_table").enum_names == ("catalog", "trace", "none", "on", "off")


# --- values ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line,name,value", [
    ("port = 5432", "port", 5432),
    ("port 5432", "port", 5432),
    ("port='5432'", "port", 5432),
    ("port = 0x1538", "port", 5432),
    ("log_file_mode = 0600", "log_file_mode", 384),
    ("num_init_children = 10 # comment", "num_init_children", 10),
    ("authentication_timeout = 1min", "authentication_timeout", 60),
    ("authentication_timeout = '2 h'", "authentication_timeout", 7200),
    ("connect_timeout = 3s", "connect_timeout", 3000),
    ("memqcache_total_size = 64MB", "memqcache_total_size", 64 * 1024 * 1024),
    ("memqcache_maxcache = 400kB", "memqcache_maxcache", 409600),
    ("log_rotation_size = 1GB", "log_rotation_size", 1024 * 1024),
    ("delay_threshold = 10000000000", "delay_threshold", 10000000000),
    ("child_life_time = 2.6", "child_life_time", 3),
    ("ssl = on", "ssl", True), ("ssl = OFF", "ssl", False), ("ssl = true", "ssl", True),
    ("ssl = f", "ssl", False), ("ssl = yes", "ssl", True), ("ssl = n", "ssl", False),
    ("ssl = 1", "ssl", True), ("ssl = 0", "ssl", False),
    ("listen_addresses = '*'", "listen_addresses", "*"),
    ("listen_addresses = localhost", "listen_addresses", "localhost"),
    ("failover_command = '/etc/x.sh %d \\'%h\\''", "failover_command", "/etc/x.sh %d \\'%h\\'"),
    ("log_line_prefix = '%t: pid %p: '   # x", "log_line_prefix", "%t: pid %p: "),
    ("backend_clustering_mode = 'native_replication'", "clustering_mode", "native_replication"),
    ("backend_clustering_mode = RAW", "clustering_mode", "raw"),
    ("check_temp_table = on", "check_temp_table", "catalog"),
    ("check_temp_table = off", "check_temp_table", "none"),
    ("check_temp_table = trace", "check_temp_table", "trace"),
    ("log_min_messages = debug", "log_min_messages", "debug2"),
    ("log_min_messages = 'DEBUG5'", "log_min_messages", "debug5"),
    ("syslog_facility = 'local3'", "syslog_facility", "LOCAL3"),
    ("disable_load_balance_on_write = 'dml_adaptive'", "disable_load_balance_on_write", "dml_adaptive"),
    ("reset_query_list = 'ABORT; DISCARD ALL'", "reset_query_list", ["ABORT", "DISCARD ALL"]),
    ("read_only_function_list = 'f1, public.f2,,'", "read_only_function_list", ["f1", "public.f2"]),
    ("write_function_list = ''", "write_function_list", []),
    ("primary_routing_query_pattern_list = 'SELECT \\'a\\;b\\';SELECT 2'", "primary_routing_query_pattern_list",
     ["SELECT 'a\\;b'", "SELECT 2"]),
    ("health_check_period = 10", "health_check_period", 10),
    ("database_redirect_preference_list = 'postgres:primary,my.*:1(0.3)'", "database_redirect_preference_list",
     "postgres:primary,my.*:1(0.3)"),
    ("log_destination = 'stderr,syslog'", "log_destination", "stderr,syslog"),
])
def test_values(line, name, value):
    assert getattr(parse(line), name) == value


@pytest.mark.parametrize("text,message", [
    ("port = abc", 'invalid value for parameter "port": "abc" in file "t.conf" line 1: '
                   'expected an integer between 1024 and 65535'),
    ("\n\nport = 80", 'invalid value for parameter "port": "80" in file "t.conf" line 3: '
                      '80 is outside the valid range (1024 .. 65535)'),
    ("port = 5432kB", 'invalid value for parameter "port": "5432kB" in file "t.conf" line 1: '
                      'this parameter does not accept units'),
    ("child_life_time = 5kB", 'invalid value for parameter "child_life_time": "5kB" in file "t.conf" line 1: '
                              'valid units for this parameter are "us", "ms", "s", "min", "h", "d"'),
    ("ssl = maybe", 'invalid value for parameter "ssl": "maybe" in file "t.conf" line 1: '
                    'expected a boolean (on/off, true/false, yes/no, 1/0)'),
    ("log_min_messages = loud", 'invalid value for parameter "log_min_messages": "loud" in file "t.conf" line 1: '
                                'expected one of debug5, debug4, debug3, debug2, debug1, info, notice, warning, '
                                'error, log, fatal, panic'),
    ("backend_clustering_mode = stream",
     'invalid value for parameter "backend_clustering_mode": "stream" in file "t.conf" line 1: expected one of '
     'streaming_replication, native_replication, logical_replication, slony, raw, snapshot_isolation'),
    ("backend_weight0 = -1", 'invalid value for parameter "backend_weight0": "-1" in file "t.conf" line 1: '
                             '-1 is outside the valid range (0 .. 100000000)'),
    ("nosuch_param = 1", 'unrecognized configuration parameter "nosuch_param" in file "t.conf" line 1'),
    ("num_init_childen = 1", 'unrecognized configuration parameter "num_init_childen" in file "t.conf" line 1; '
                             'did you mean "num_init_children"?'),
    ("port =", 'syntax error in configuration file "t.conf" line 1: missing value for parameter "port" '
               '(found end of line)'),
    ("socket_dir = /tmp", 'syntax error in configuration file "t.conf" line 1: unexpected character "/" in the '
                          'value of parameter "socket_dir" (quote the value)'),
    ("log_line_prefix = 'it''s'", 'syntax error in configuration file "t.conf" line 1: unexpected "\'s\'"'),
    ("port = 1 2", 'syntax error in configuration file "t.conf" line 1: unexpected "2"'),
    ("backend_hostname = 'h'", 'parameter "backend_hostname" in file "t.conf" line 1 expects a node index postfix, '
                               'e.g. "backend_hostname0"'),
    ("backend_hostnameX = 'h'", 'invalid index value for parameter "backend_hostnameX": index part contains the '
                                'invalid non digit character in file "t.conf" line 1'),
    ("backend_port128 = 5432", 'invalid index 128 for parameter "backend_port128": allowed index is between 0 and '
                               '127 in file "t.conf" line 1'),
    ("backend_flag0 = 'ALLOW_TO_FAILOVER|DISALLOW_TO_FAILOVER'",
     'invalid value for parameter "backend_flag0": "ALLOW_TO_FAILOVER|DISALLOW_TO_FAILOVER" in file "t.conf" '
     'line 1: cannot set ALLOW_TO_FAILOVER and DISALLOW_TO_FAILOVER at the same time'),
    ("backend_hostname0 = 'a'\nbackend_port0 = 5432\nbackend_hostname2 = 'c'\nbackend_port2 = 5432",
     'invalid configuration in file "t.conf" line 3: backend ids must be contiguous from 0: backend_hostname1 / '
     'backend_port1 is missing but node 2 is configured'),
    ("backend_hostname0 = 'a'", 'invalid configuration in file "t.conf" line 1: backend_hostname0 is set but '
                                'backend_port0 is not'),
    ("num_init_children = 4\nreserved_connections = 4",
     'invalid configuration in file "t.conf" line 2: reserved_connections (4) must be less than '
     'num_init_children (4)'),
    ("backend_hostname0 = 'a'\nbackend_port0 = 5432\nrecovery_1st_stage_command = 'r.sh'",
     'invalid configuration in file "t.conf" line 3: recovery_1st_stage_command and recovery_2nd_stage_command '
     'require backend_data_directoryN to be set for every backend'),
    ("other_pgpool_hostname0 = 'x'",
     'parameter "other_pgpool_hostname0" in file "t.conf" line 1 was removed in pgpool-II 4.2: describe every '
     'pgpool node with hostnameN (same list on all nodes) and put the local node id in pgpool_node_id'),
    ("log_destination = 'file'", 'invalid value for parameter "log_destination": "file" in file "t.conf" line 1: '
                                 "unknown destination 'file'; expected stderr and/or syslog"),
    ("app_name_redirect_preference_list = 'psql:foo'",
     'invalid value for parameter "app_name_redirect_preference_list": "psql:foo" in file "t.conf" line 1: wrong '
     'redirect node spec in "psql:foo"; expected <regex>:<primary|standby|node id>[(<ratio>)]'),
    ("database_redirect_preference_list = 'x:primary(2)'",
     'invalid value for parameter "database_redirect_preference_list": "x:primary(2)" in file "t.conf" line 1: '
     'redirect ratio in "x:primary(2)" must be between 0.0 and 1.0'),
    ("master_slave_mode = on\nmaster_slave_sub_mode = 'mirror'",
     'invalid value for parameter "master_slave_sub_mode": "mirror" in file "t.conf" line 2: expected one of '
     'stream, slony, logical'),
])
def test_errors(text, message):
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert str(e.value) == message
    assert e.value.file == "t.conf" and e.value.line is not None


# --- backends, per-node parameters -------------------------------------------------------------------------

TWO_NODES = """
backend_hostname0 = 'h0'
backend_port0 = 5432
backend_weight0 = 1
backend_data_directory0 = '/d0'
backend_hostname1 = 'h1'
backend_port1 = 5433
backend_weight1 = 0.5
backend_flag1 = 'DISALLOW_TO_FAILOVER|ALWAYS_PRIMARY'
backend_application_name1 = 'server1'
health_check_period1 = 5
health_check_period = 10
health_check_user = 'hc'
connect_timeout0 = 2s
"""


def test_backends():
    cfg = parse(TWO_NODES)
    b0, b1 = cfg.backends
    assert (b0.node_id, b0.hostname, b0.port, b0.weight, b0.data_directory, b0.flag, b0.application_name) == (
        0, "h0", 5432, 1.0, "/d0", "ALLOW_TO_FAILOVER", "")
    assert (b1.hostname, b1.port, b1.weight, b1.flag, b1.application_name) == (
        "h1", 5433, 0.5, "DISALLOW_TO_FAILOVER|ALWAYS_PRIMARY", "server1")
    assert b0.allow_to_failover and not b0.always_primary
    assert not b1.allow_to_failover and b1.always_primary
    # per-node values win over the index-free default, wherever they are written
    assert b0.health_check == {"period": 10, "timeout": 20, "user": "hc", "password": "", "database": "postgres",
                               "max_retries": 0, "retry_delay": 1, "connect_timeout": 2000}
    assert b1.health_check["period"] == 5 and b1.health_check["connect_timeout"] == 10000
    assert cfg["health_check_period1"] == 5 and cfg["health_check_period0"] == 10
    assert cfg["backend_hostname1"] == "h1" and cfg.health_check_period == 10


def test_backend_without_hostname_uses_socket_dir():
    assert parse("backend_port0 = 5432").backends[0].hostname == "/tmp"


def test_only_always_primary_flag_allows_failover():
    cfg = parse("backend_hostname0 = 'h'\nbackend_port0 = 5432\nbackend_flag0 = 'ALWAYS_PRIMARY'")
    assert cfg.backends[0].flag == "ALLOW_TO_FAILOVER|ALWAYS_PRIMARY"


def test_watchdog_and_heartbeat_nodes():
    cfg = parse("hostname0 = 'a'\nwd_port0 = 9000\npgpool_port0 = 9999\nhostname1 = 'b'\nwd_port1 = 9000\n"
                "pgpool_port1 = 9999\nheartbeat_hostname0 = 'a'\nheartbeat_port0 = 9694\nheartbeat_device0 = 'eth0'")
    assert [(w.node_id, w.hostname, w.wd_port, w.pgpool_port) for w in cfg.watchdog_nodes] == [
        (0, "a", 9000, 9999), (1, "b", 9000, 9999)]
    assert [(h.node_id, h.hostname, h.port, h.device) for h in cfg.heartbeats] == [(0, "a", 9694, "eth0")]


def test_later_assignment_wins_and_include(tmp_path):
    (tmp_path / "extra.conf").write_text("port = 6000\nnum_init_children = 8\n")
    main = tmp_path / "pgpool.conf"
    main.write_text("port = 5000\ninclude = 'extra.conf'\nnum_init_children = 9\n")
    cfg = load_config(str(main))
    assert (cfg.port, cfg.num_init_children, cfg.source_file) == (6000, 9, str(main))


def test_missing_file():
    with pytest.raises(ConfigError, match='could not open configuration file "/nonexistent/pgpool.conf"'):
        load_config("/nonexistent/pgpool.conf")


# --- legacy names ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,mode", [
    ("master_slave_mode = on\nmaster_slave_sub_mode = 'stream'", "streaming_replication"),
    ("master_slave_mode = on\nmaster_slave_sub_mode = 'logical'", "logical_replication"),
    ("master_slave_mode = on", "slony"),
    ("replication_mode = on\nmaster_slave_mode = off", "native_replication"),
    ("replication_mode = off\nmaster_slave_mode = off", "raw"),
    ("master_slave_mode = on\nbackend_clustering_mode = 'raw'", "raw"),
])
def test_legacy_clustering_mode(text, mode):
    cfg = parse(text)
    assert cfg.clustering_mode == mode
    assert cfg.warnings


@pytest.mark.parametrize("old,new,value,expected", [
    ("white_function_list", "read_only_function_list", "'a,b'", ["a", "b"]),
    ("black_function_list", "write_function_list", "'nextval'", ["nextval"]),
    ("black_query_pattern_list", "primary_routing_query_pattern_list", "'x.*'", ["x.*"]),
    ("white_memqcache_table_list", "cache_safe_memqcache_table_list", "'t1'", ["t1"]),
    ("black_memqcache_table_list", "cache_unsafe_memqcache_table_list", "'t2'", ["t2"]),
    ("follow_master_command", "follow_primary_command", "'f.sh'", "f.sh"),
    ("fail_over_on_backend_error", "failover_on_backend_error", "off", False),
    ("unix_socket_directories", "socket_dir", "'/run/x'", "/run/x"),
    ("pcp_unix_socket_directories", "pcp_socket_dir", "'/run/y'", "/run/y"),
    ("delegate_ip", "delegate_IP", "'10.0.0.1'", "10.0.0.1"),
])
def test_renamed(old, new, value, expected):
    cfg = parse(f"{old} = {value}")
    assert getattr(cfg, new) == expected
    [(file, line, text)] = cfg.warnings
    assert (file, line) == ("t.conf", 1) and text.startswith(f'parameter "{old}" is now "{new}" (')


def test_obsolete_ignored_with_warning():
    cfg = parse("debug_level = 1\nprint_timestamp = on\nbackend_socket_dir = '/tmp'")
    assert [w[1] for w in cfg.warnings] == [1, 2, 3]
    assert cfg.values == Config.defaults().values


# --- defaults, sample, real files --------------------------------------------------------------------------

def test_every_default_parses_back():
    for s in SETTINGS.values():
        if s.per_node and not s.node_default:
            continue
        cfg = parse(f"{s.name} = {render_value(s)}")
        assert cfg.values[s.name] == Config.defaults().values[s.name], s.name


def test_defaults_have_no_backends():
    cfg = Config.defaults()
    assert cfg.backends == [] and cfg.clustering_mode == "streaming_replication" and cfg.source_file is None


def test_generated_sample_is_current_and_parses_to_defaults():
    with open(SAMPLE) as f:
        text = f.read()
    assert text == generate(), "regenerate: python -m pgpool.config.sample > sample/pgpool.conf.sample"
    assert parse(text).values == Config.defaults().values
    uncommented = re.sub(r"(?m)^#([a-zA-Z_]+ = )", r"\1", text)   # every scalar line, default value
    assert parse(uncommented).values == Config.defaults().values


def test_changed_needing_restart():
    old = parse("port = 5000\nlog_statement = on\nbackend_port0 = 5432")
    new = parse("port = 5001\nlog_statement = off\nbackend_port0 = 5433\nnum_init_children = 5")
    assert old.changed_needing_restart(new) == ["port", "num_init_children"]


REAL_FILES = ["/etc/pgpool2/pgpool.conf"] + sorted(glob.glob("/usr/share/doc/pgpool2/examples/pgpool.conf.sample*"))


@pytest.mark.parametrize("path", REAL_FILES)
def test_real_pgpool_files_parse(path):
    if not os.path.exists(path):
        pytest.skip(f"{path} not installed (Debian package pgpool2 absent)")
    cfg = load_config(path)
    assert cfg.clustering_mode == "streaming_replication"
    assert cfg.authentication_timeout == 60 and cfg.reset_query_list == ["ABORT", "DISCARD ALL"]


# --- side files --------------------------------------------------------------------------------------------

def test_pcp_conf():
    text = "# comment\n\nadmin:e8a48653851e28c69d0506508fb27fc5\nbob:abc\r\nadmin:other\n"
    assert parse_pcp_conf(text) == [("admin", "e8a48653851e28c69d0506508fb27fc5"), ("bob", "abc\r"),
                                    ("admin", "other")]
    with pytest.raises(PcpConfError, match=r"username read from file \"p\" is larger than maximum allowed "
                                           r"username length \[128\]"):
        parse_pcp_conf("x" * 200 + "\n", "p")


@pytest.mark.parametrize("content,result", [
    ("0\n", 0), ("3", 3), ("", 'pgpool_node_id file is empty'), ("\n", 'pgpool_node_id file is empty'),
    ("x1\n", "pgpool_node_id is not a numeric value"), ("128\n", 'Invalid pgpool node id "128"'),
    (None, "Pgpool node id file"),
])
def test_pgpool_node_id(tmp_path, content, result):
    conf = tmp_path / "pgpool.conf"
    if content is not None:
        (tmp_path / "pgpool_node_id").write_text(content)
    if isinstance(result, int):
        assert read_pgpool_node_id(str(conf)) == result
    else:
        with pytest.raises(ConfigError, match=re.escape(result)):
            read_pgpool_node_id(str(conf))


def test_watchdog_needs_local_node(tmp_path):
    (tmp_path / "pgpool_node_id").write_text("1\n")
    conf = tmp_path / "pgpool.conf"
    conf.write_text("use_watchdog = on\nhostname0 = 'a'\nwd_port0 = 9000\npgpool_port0 = 9999\n")
    with pytest.raises(ConfigError, match="no watchdog configuration for local pgpool node, pgpool node id: 1"):
        load_config(str(conf))
    conf.write_text(conf.read_text() + "hostname1 = 'b'\nwd_port1 = 9000\npgpool_port1 = 9999\n")
    assert load_config(str(conf)).pgpool_node_id == 1
