# Build, run and test pgpool-py.  Re-runs are quick: the venv is rebuilt only when setup.cfg changes.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PG_BIN := /usr/lib/postgresql/15/bin

.PHONY: run test bench bench-failover clean venv sysdeps

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

# System packages for the integration and compatibility tests (PostgreSQL 15, the real pgpool-II).
# Best effort: installs only what is missing, only as root with apt-get, and never fails the build.
sysdeps:
	@if [ -x $(PG_BIN)/initdb ] && [ -x /usr/sbin/pgpool ] && command -v psql >/dev/null; then \
		exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing system packages: postgresql-15 pgpool2"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq >/dev/null 2>&1 && \
		apt-get install -y -qq postgresql-15 postgresql-client-15 pgpool2 >/dev/null 2>&1 || \
		echo "warning: apt-get could not install postgresql-15/pgpool2"; \
	else \
		echo "warning: PostgreSQL 15 or pgpool2 missing and apt-get unavailable"; \
	fi

run: venv
	$(VPY) -m pgpool.tools.devrun

test: sysdeps venv
	$(VPY) -m pytest -q tests

bench: venv
	$(VPY) -m tests.bench

# Failover timing, ours vs pgpool-II 4.3 (kills and rebuilds a scratch cluster; not a test).
bench-failover: sysdeps venv
	$(VPY) -m tests.bench_failover

clean:
	rm -rf $(VENV) .run build *.egg-info .pytest_cache tests/.tmp
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
