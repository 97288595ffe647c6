# bench/bench.mk - performance benchmarks (included by the Makefile).
#
#   make bench          pgbench ceiling, paddlehook via nginx and the Node.js peer at
#                       1/4/16/32 connections, worker-count sweep, callgrind profile;
#                       prints the table and rewrites its section of docs/performance.md
#   make bench-soak     200,000 events through paddlehook: worker RSS over time
#   make bench-profile  perf + pg_stat_statements (nested) + WAL: where the time goes
#   make bench-pinned   the 16-connection runs with PostgreSQL on CPU 0 and the rest on CPU 1
#   make bench-ingest   callgrind instruction counts of paddle.ingest_event per event in PostgreSQL
#
#   BENCH_ARGS='--events 10000 --levels 16'   passed to bench/run.py (see --help),
#                                              or to bench/ingest_ir.py for bench-ingest
#
# Everything runs on 127.0.0.1 in a temporary directory and is stopped afterwards.

# Included above the Makefile's first rule: leave the default goal alone.
_bench_default_goal := $(.DEFAULT_GOAL)

BENCH_ARGS  ?=
BENCH_DIR   := $(BUILD)/bench
BENCH_PEER  := $(BENCH_DIR)/peer-node
# Debian packages the benchmarks need on top of DEB_PKGS (nodejs: see bench-deps).
BENCH_DEB_PKGS := wrk valgrind linux-perf

.PHONY: bench bench-pinned bench-soak bench-profile bench-ingest bench-deps bench-peer

bench: deps all bench-deps bench-peer $(BENCH_DIR)/profile-event
	timeout 2400 python3 bench/run.py bench $(BENCH_ARGS)

bench-pinned: deps all bench-deps bench-peer
	timeout 1200 python3 bench/run.py bench --pin --levels 16 --also-workers '' --no-callgrind $(BENCH_ARGS)

bench-soak: deps all bench-deps
	timeout 1800 python3 bench/run.py soak $(BENCH_ARGS)

bench-profile: deps all bench-deps
	timeout 1800 python3 bench/run.py profile $(BENCH_ARGS)

bench-ingest: deps all
	timeout 1800 python3 bench/ingest_ir.py $(BENCH_ARGS)

# Same rule as `deps`: install when root, else print the apt-get line.
bench-deps:
	$(call install_missing_debs,$(BENCH_DEB_PKGS),command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm";)

# The Node.js peer, installed from its lockfile outside the source tree.
bench-peer: $(BENCH_PEER)/node_modules/.package-lock.json
	@cp bench/peer-node/server.js $(BENCH_PEER)/server.js

$(BENCH_PEER)/node_modules/.package-lock.json: bench/peer-node/package.json bench/peer-node/package-lock.json
	@mkdir -p $(BENCH_PEER)
	cp bench/peer-node/package.json bench/peer-node/package-lock.json $(BENCH_PEER)/
	cd $(BENCH_PEER) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# verify + parse + bind of one event, linked against the worker's own sources.
$(BENCH_DIR)/profile-event: bench/profile_event.c fcgi/sig.c fcgi/event.c fcgi/*.h | $(BUILD)
	@mkdir -p $(BENCH_DIR)
	@echo "  LINK  $@"
	@$(CC) $(ALL_CFLAGS) $(HARDEN) $(LDHARDEN) -o $@ bench/profile_event.c fcgi/sig.c fcgi/event.c \
	  $(shell pkg-config --libs libsodium yajl 2>/dev/null)

.DEFAULT_GOAL := $(_bench_default_goal)
