# make chaos: tests/chaos.py, the full chaos test ("acked => stored, exactly
# once, under faults"): CHAOS_EVENTS signed events through nginx while workers,
# PostgreSQL and nginx are killed and the database is blocked; bounded by
# --max-seconds (and by timeout(1) should the driver itself hang).
#   make chaos CHAOS_EVENTS=20000 CHAOS_ARGS='--seed 42 --json chaos.json'
# tests/test_chaos.py runs a short version inside `make check`.

CHAOS_EVENTS  ?= 40000
CHAOS_SECONDS ?= 570
CHAOS_ARGS    ?=

# This file is included before the Makefile's first rule: keep `all` the
# default goal.
_chaos_default_goal := $(.DEFAULT_GOAL)

.PHONY: chaos
chaos: deps all
	timeout --kill-after=30 $$(( $(CHAOS_SECONDS) + 60 )) \
	  python3 tests/chaos.py --events $(CHAOS_EVENTS) --max-seconds $(CHAOS_SECONDS) $(CHAOS_ARGS)

.DEFAULT_GOAL := $(_chaos_default_goal)
