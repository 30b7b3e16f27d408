"""The pgpool_status file (pgpool/state/status_file.py): tolerant reading, what is logged, -D, writing."""

import pytest

from pgpool import log
from pgpool.state.status_file import discard_status_file, read_status_file, write_status_file


@pytest.fixture
def logged(monkeypatch):
    """Messages logged meanwhile, as (level, message, detail)."""
    seen = []
    monkeypatch.setattr(log, "log", lambda level, message, detail=None, hint=None:
                        seen.append((level, message, detail)))
    return seen


@pytest.mark.parametrize("content, expected, warning_detail", [
    (b"up\ndown\nup\n", ["up", "down", "up"], None),
    (b"UP\r\nDown\r\n", ["up", "down", "up"], None),          # any case, CRLF, missing line up
    (b"up\nunused\ndown\n", ["up", "unused", "down"], None),
    (b"up\ndown\nup\ndown\n", ["up", "down", "up"], None),    # extra lines (backends removed)
    (b"down\ndown\n", None, None),                            # nobody up: every node up
    (b"up\ndo", None, 'backend:1 status is invalid: "do"; all backend nodes are assumed to be up'),
    (b"up\nsideways\n", None, 'backend:1 status is invalid: "sideways"; all backend nodes are assumed to be up'),
    (b"\x00\x01\x02\x03garbage\xff", None, "the file is not text; all backend nodes are assumed to be up"),
    (b"", None, "the file is empty; all backend nodes are assumed to be up"),
    (b"\n \n", None, "the file is empty; all backend nodes are assumed to be up"),
])
def test_read(tmp_path, logged, content, expected, warning_detail):
    path = tmp_path / "pgpool_status"
    path.write_bytes(content)
    assert read_status_file(str(path), 3) == expected
    warnings = [(m, d) for level, m, d in logged if level == "WARNING"]
    if warning_detail is None:
        assert warnings == []
    else:
        assert warnings == [(f'invalid data in backend status file "{path}", ignoring it', warning_detail)]


def test_down_nodes_are_logged(tmp_path, logged):
    path = tmp_path / "pgpool_status"
    path.write_text("up\ndown\ndown\n")
    assert read_status_file(str(path), 3) == ["up", "down", "down"]
    assert [m for _, m, _ in logged] == ["reading status file: 1 th backend is set to down status",
                                         "reading status file: 2 th backend is set to down status"]


def test_missing_file(tmp_path, logged):
    path = tmp_path / "pgpool_status"
    assert read_status_file(str(path), 2) is None
    assert logged == [("LOG", f"Backend status file {path} does not exist", None)]


def test_unreadable_file_is_a_warning(tmp_path, logged):
    assert read_status_file(str(tmp_path), 2) is None          # a directory
    assert [level for level, _, _ in logged] == ["WARNING"]
    assert str(tmp_path) in logged[0][1]


def test_discard(tmp_path, logged):
    path = tmp_path / "pgpool_status"
    path.write_text("up\ndown\n")
    discard_status_file(str(path))
    assert not path.exists()
    discard_status_file(str(path))                             # nothing to discard: silent
    assert logged == [("LOG", f"Backend status file {path} discarded", None)]


def test_write_replaces_atomically(tmp_path):
    path = tmp_path / "pgpool_status"
    path.write_text("garbage")
    write_status_file(str(path), ["up", "down", "unused"])
    assert path.read_text() == "up\ndown\nunused\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pgpool_status"]
    assert read_status_file(str(path), 3) == ["up", "down", "unused"]
