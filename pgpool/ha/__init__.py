"""High availability: failover, failback, promotion and follow primary (pgpool-II 4.3 semantics).

escapes: %-escapes of failover_command / failback_command / follow_primary_command (pure);
plan: what a node request does to the backend table, commands and workers (pure);
scripts: running those commands without blocking the parent;
requests: how workers and the PCP server ask the parent for a node operation;
follow: the follow_child process that runs follow_primary_command;
failover: the parent's state machine that executes plans step by step from its main loop.
"""
