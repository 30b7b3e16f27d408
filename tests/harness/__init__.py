"""Test harness: PostgreSQL clusters, pgpool subprocesses and real client programs for integration tests."""
