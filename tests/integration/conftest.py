"""Integration tests run against real PostgreSQL: mark them so `-m "not integration"` runs the fast ones."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
