# chattrio -- local development entry points. See scripts/*.sh for details.
#   make run              one node on :8080 (installs deps, starts the dev stack)
#   make run NODES=3      three nodes on :8081-8083 behind nginx on :8080
#   make run NODES=3 TOPOLOGY=ha   the same on the ha stack (scripts/ha.sh, docs/ha.md)
#   make test             test stack + pytest (PYTEST_ARGS=...) + web tests
#   make test-unit        the tests that need no service (no stack started) and mypy, in under a minute
#   make bench            scripts/bench.sh (BENCH_ARGS="seed failover")
#   make chaos            scripts/chaos.sh matrix: faults under load on the ha topology, with verdicts
SHELL := /bin/bash
NODES ?= 1
TOPOLOGY ?= single
PORT ?= 8080
PYTEST_ARGS ?=
BENCH_ARGS ?=
export NODES PORT PYTEST_ARGS TOPOLOGY

.PHONY: run test test-unit test-py bench install up down status env wipe cluster-status chaos help

help:
	@sed -n '2,7p' Makefile | sed 's/^# \{0,1\}//'

run:
	@scripts/run.sh $(NODES)

test:
	@scripts/test.sh

# mypy runs beside pytest: most of these tests wait on sockets and timers, which leaves a core free.
test-unit:
	@scripts/install.sh --no-web-deps
	@log=$$(mktemp); .venv/bin/mypy >"$$log" 2>&1 & mypy=$$!; \
	.venv/bin/pytest -m "not services" $(PYTEST_ARGS); tests=$$?; \
	wait $$mypy; types=$$?; cat "$$log"; rm -f "$$log"; exit $$((tests || types))

test-py:
	@WEB_TESTS=0 scripts/test.sh

bench:
	@if [ -f scripts/bench.sh ]; then bash scripts/bench.sh $(BENCH_ARGS); \
	else echo "scripts/bench.sh does not exist yet" >&2; exit 1; fi

install:
	@scripts/install.sh

# dev stack only (CHATTRIO_STACK=test make up for the test stack)
up: install
	@scripts/stack.sh up

down:
	@scripts/cluster.sh down
	@scripts/stack.sh down

status:
	@scripts/stack.sh status; scripts/cluster.sh status 2>/dev/null || true

env:
	@scripts/stack.sh env

wipe:
	@scripts/cluster.sh down
	@scripts/stack.sh wipe

cluster-status:
	@scripts/cluster.sh status

# every fault on every target of the ha topology under load, each with a verdict (docs/reliability.md)
chaos:
	@scripts/chaos.sh matrix --doc docs/reliability.md
