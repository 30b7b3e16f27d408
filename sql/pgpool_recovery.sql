-- Online-recovery functions pgpool calls on the primary (pcp_recovery_node), in SQL and PL/pgSQL.
--
-- Same names, arguments and results as pgpool-II's C extension "pgpool_recovery" (4.3), without
-- compiling anything: the scripts run with COPY ... TO PROGRAM, so only superusers may call these
-- functions, exactly as with the C version.  Every argument is quoted for the shell, so paths with
-- spaces or quotes are safe.  Install as a superuser into template1 (and into postgres, which
-- already exists when you install):
--
--     psql -U postgres -f sql/pgpool_recovery.sql template1
--     psql -U postgres -f sql/pgpool_recovery.sql postgres
--
-- Re-running the file replaces the functions.

-- 'text' quoted for a POSIX shell: inside single quotes, each ' becomes '\''.
CREATE OR REPLACE FUNCTION pgpool_shell_quote(IN value text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
AS $$ SELECT '''' || replace(value, '''', '''\''''') || '''' $$;

-- pgpool-II's check: "must be superuser to use <caller> function".
CREATE OR REPLACE FUNCTION pgpool_require_superuser(IN caller text)
RETURNS void
LANGUAGE plpgsql STRICT
AS $$
BEGIN
    IF current_setting('is_superuser') <> 'on' THEN
        RAISE EXCEPTION 'must be superuser to use % function', caller
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

-- Run a shell command line in the server's data directory (the cwd of every backend) as the
-- server's OS user; wait for it; raise "<caller> failed: <what> failed" when it exits non-zero.
CREATE OR REPLACE FUNCTION pgpool_run_program(IN caller text, IN what text, IN command text)
RETURNS bool
LANGUAGE plpgsql STRICT
AS $$
DECLARE
    why text;
BEGIN
    RAISE DEBUG '%: running %', caller, command;
    BEGIN
        EXECUTE format('COPY (SELECT 1 WHERE false) TO PROGRAM %L', command);
    EXCEPTION WHEN external_routine_exception THEN
        GET STACKED DIAGNOSTICS why = PG_EXCEPTION_DETAIL;
        RAISE EXCEPTION '% failed: % failed', caller, what
            USING ERRCODE = 'external_routine_exception', DETAIL = why,
                  HINT = format('command line: %s', command);
    END;
    RETURN true;
END
$$;

-- Runs "$PGDATA/<script>" with the arguments of the overload called (oldest first):
--   $PGDATA remote_host remote_data_directory [primary_port [remote_node [remote_port [primary_host]]]]
CREATE OR REPLACE FUNCTION pgpool_recovery_script(IN script_name text, IN args text[])
RETURNS bool
LANGUAGE plpgsql STRICT
AS $$
DECLARE
    datadir text;
BEGIN
    PERFORM pgpool_require_superuser('pgpool_recovery');
    datadir := current_setting('data_directory');
    RETURN pgpool_run_program(
        'pgpool_recovery', format('script "%s/%s"', datadir, script_name),
        pgpool_shell_quote(datadir || '/' || script_name) || ' ' ||
        (SELECT string_agg(pgpool_shell_quote(a), ' ' ORDER BY n)
           FROM unnest(datadir || args) WITH ORDINALITY AS t(a, n)));
END
$$;

-- pgpool-II 4.3 and later
CREATE OR REPLACE FUNCTION pgpool_recovery(IN script_name text,
       IN remote_host text,
       IN remote_data_directory text,
       IN primary_port text,
       IN remote_node integer,
       IN remote_port text,
       IN primary_host text)
RETURNS bool
LANGUAGE sql STRICT
AS $$ SELECT pgpool_recovery_script(script_name, ARRAY[remote_host, remote_data_directory, primary_port,
                                                        remote_node::text, remote_port, primary_host]) $$;

-- pgpool-II 4.1 and 4.2
CREATE OR REPLACE FUNCTION pgpool_recovery(IN script_name text,
       IN remote_host text,
       IN remote_data_directory text,
       IN primary_port text,
       IN remote_node integer,
       IN remote_port text)
RETURNS bool
LANGUAGE sql STRICT
AS $$ SELECT pgpool_recovery_script(script_name, ARRAY[remote_host, remote_data_directory, primary_port,
                                                        remote_node::text, remote_port]) $$;

-- pgpool-II 4.0
CREATE OR REPLACE FUNCTION pgpool_recovery(IN script_name text,
       IN remote_host text,
       IN remote_data_directory text,
       IN primary_port text,
       IN remote_node integer)
RETURNS bool
LANGUAGE sql STRICT
AS $$ SELECT pgpool_recovery_script(script_name, ARRAY[remote_host, remote_data_directory, primary_port,
                                                        remote_node::text]) $$;

-- pgpool-II 3.4 to 3.7
CREATE OR REPLACE FUNCTION pgpool_recovery(IN script_name text,
       IN remote_host text,
       IN remote_data_directory text,
       IN primary_port text)
RETURNS bool
LANGUAGE sql STRICT
AS $$ SELECT pgpool_recovery_script(script_name, ARRAY[remote_host, remote_data_directory, primary_port]) $$;

-- pgpool-II before 3.4
CREATE OR REPLACE FUNCTION pgpool_recovery(IN script_name text,
       IN remote_host text,
       IN remote_data_directory text)
RETURNS bool
LANGUAGE sql STRICT
AS $$ SELECT pgpool_recovery_script(script_name, ARRAY[remote_host, remote_data_directory]) $$;

-- Runs "$PGDATA/pgpool_remote_start <remote_host> <remote_data_directory>".
CREATE OR REPLACE FUNCTION pgpool_remote_start(IN remote_host text, IN remote_data_directory text)
RETURNS bool
LANGUAGE plpgsql STRICT
AS $$
DECLARE
    path text;
BEGIN
    PERFORM pgpool_require_superuser('pgpool_remote_start');
    path := current_setting('data_directory') || '/pgpool_remote_start';
    RETURN pgpool_run_program(
        'pgpool_remote_start', format('script "%s"', path),
        pgpool_shell_quote(path) || ' ' || pgpool_shell_quote(remote_host) || ' '
            || pgpool_shell_quote(remote_data_directory));
END
$$;

-- Starts "<pgpool.pg_ctl> <action> -D <data_directory> [-m <stop_mode>]" in the background (this
-- server's own pg_ctl: start/stop/restart/reload); stop_mode '' leaves -m out.  pgpool.pg_ctl is a
-- setting of postgresql.conf (see sql/README.md); without it the call fails.
CREATE OR REPLACE FUNCTION pgpool_pgctl(IN action text, IN stop_mode text)
RETURNS bool
LANGUAGE plpgsql STRICT
AS $$
DECLARE
    pg_ctl text;
    command text;
BEGIN
    PERFORM pgpool_require_superuser('pgpool_pgctl');
    pg_ctl := current_setting('pgpool.pg_ctl');
    command := pgpool_shell_quote(pg_ctl) || ' ' || pgpool_shell_quote(action) || ' -D '
               || pgpool_shell_quote(current_setting('data_directory'));
    IF stop_mode <> '' THEN
        command := command || ' -m ' || pgpool_shell_quote(stop_mode);
    END IF;
    RETURN pgpool_run_program('pgpool_pgctl', format('"%s %s"', pg_ctl, action),
                              command || ' </dev/null >/dev/null 2>&1 &');
END
$$;

-- pg_switch_wal(), then wait until the finished WAL segment is completely in archive_dir (for
-- 2nd-stage scripts of native replication mode); returns the archived file's path.
CREATE OR REPLACE FUNCTION pgpool_switch_xlog(IN archive_dir text)
RETURNS text
LANGUAGE plpgsql STRICT
AS $$
DECLARE
    segment text;
    path text;
    bytes bigint;
BEGIN
    PERFORM pg_stat_file(archive_dir);       -- 'could not stat file "...": ...' when it is missing
    IF current_setting('server_version_num')::int >= 100000 THEN
        EXECUTE 'SELECT pg_walfile_name(pg_switch_wal())' INTO segment;
    ELSE
        EXECUTE 'SELECT pg_xlogfile_name(pg_switch_xlog())' INTO segment;
    END IF;
    path := archive_dir || '/' || segment;
    RAISE LOG 'pgpool_switch_xlog: waiting for "%"', path;
    LOOP
        SELECT s.size INTO bytes FROM pg_stat_file(path, true) AS s;
        EXIT WHEN bytes > 0 AND bytes % (1024 * 1024) = 0;
        PERFORM pg_sleep(1);
    END LOOP;
    RETURN path;
END
$$;
