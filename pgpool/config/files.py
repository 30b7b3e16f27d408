"""Readers for pgpool's small side files: pcp.conf (user:md5 lines) and pgpool_node_id (watchdog node id)."""

from __future__ import annotations

import os

from pgpool.config.errors import ConfigError
from pgpool.config.settings import MAX_WATCHDOG_NODES

MAX_PCP_LINE = 512          # pgpool reads pcp.conf with fgets(…, 512): longer lines are split
MAX_USER_PASSWD_LEN = 128
NODE_ID_FILE_NAME = "pgpool_node_id"


class PcpConfError(Exception):
    """pcp.conf cannot be used; message/detail are pgpool's texts (sent as FATAL to the PCP client)."""

    def __init__(self, message: str, detail: str):
        super().__init__(f"{message}: {detail}")
        self.message = message
        self.detail = detail


def parse_pcp_conf(text: str, filename: str = "pcp.conf") -> list[tuple[str, str]]:
    """(user, md5hex) entries in file order; duplicates kept (pgpool accepts a password matching any of them).

    Lines starting with '#' or empty are skipped; nothing is trimmed (a trailing CR is part of the hash), as pgpool.
    """
    entries = []
    for line in _fgets_lines(text):
        if line.startswith(("\n", "#")) or line == "":
            continue
        colon = line.find(":", 0, MAX_USER_PASSWD_LEN + 1)
        if colon < 0:
            raise PcpConfError("failed to authenticate PCP user",
                               f'username read from file "{filename}" is larger than maximum allowed username '
                               f"length [{MAX_USER_PASSWD_LEN}]")
        password = line[colon + 1:].split("\n", 1)[0]
        if len(password) > MAX_USER_PASSWD_LEN:
            raise PcpConfError("failed to authenticate PCP user",
                               f'password read from file "{filename}" is larger than maximum allowed password '
                               f"length [{MAX_USER_PASSWD_LEN}]")
        entries.append((line[:colon], password))
    return entries


def _fgets_lines(text: str):
    """Lines as fgets(buf, 512) returns them: at most 511 characters each, newline kept."""
    for line in text.splitlines(keepends=True):
        while len(line) > MAX_PCP_LINE - 1:
            yield line[:MAX_PCP_LINE - 1]
            line = line[MAX_PCP_LINE - 1:]
        yield line


def read_pcp_conf(path: str) -> list[tuple[str, str]]:
    """parse_pcp_conf of a file (pgpool re-reads it on every PCP login); PcpConfError if unreadable."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise PcpConfError("failed to authenticate PCP user", f"could not open {path}. reason: {e.strerror}") from None
    return parse_pcp_conf(text, path)


def node_id_file(config_file: str) -> str:
    """Path of pgpool_node_id: next to pgpool.conf."""
    return os.path.join(os.path.dirname(os.path.abspath(config_file)), NODE_ID_FILE_NAME)


def read_pgpool_node_id(config_file: str) -> int:
    """This pgpool's watchdog node id from pgpool_node_id beside config_file; ConfigError as pgpool words it."""
    path = node_id_file(config_file)
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            first = f.readline(9)
    except OSError:
        raise ConfigError(f"Pgpool node id file {path} does not exist: if watchdog is enabled, pgpool_node_id file "
                          f"is required", file=path) from None
    text = first[:-1] if first.endswith("\n") else first
    if not text:
        raise ConfigError(f"pgpool_node_id file is empty: if watchdog is enabled, we need to specify pgpool node id "
                          f"in {path} file", file=path)
    if not text.isdigit():
        raise ConfigError(f"pgpool_node_id is not a numeric value: please specify a numeric value in {path} file",
                          file=path)
    node_id = int(text)
    if node_id >= MAX_WATCHDOG_NODES:
        raise ConfigError(f'Invalid pgpool node id "{node_id}", must be between 0 and {MAX_WATCHDOG_NODES - 1}',
                          file=path)
    return node_id
