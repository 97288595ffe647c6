# tests/fuzz/fuzz.mk - fuzzing, sanitizer and valgrind targets (included by the Makefile).
#
#   make fuzz             each libFuzzer target for FUZZ_SECONDS (default 60) seconds
#   make fuzz-regress     replay tests/fuzz/regressions/<target>/* and the checked-in seeds
#   make check-asan       the integration suite against build/asan/paddlehook (ASan+UBSan)
#   make valgrind         `serve --workers 1` under memcheck, VALGRIND_REQUESTS mixed requests
#
# Targets (tests/fuzz/fuzz_<name>.c): sig (sig_parse/sig_verify), event (event_parse),
# template (template_expand), fcgi (the worker's request path in process, via libfcgi).
# A crash or violated property leaves its input in tests/fuzz/regressions/<name>/;
# commit it with the fix and fuzz-regress replays it from then on. The growing
# corpus lives in build/fuzz/corpus/<name> (seeded from the Paddle fixtures).

# Included before `all:`; keep `make` without a goal building `all`.
fuzz_default_goal := $(.DEFAULT_GOAL)

# clang also builds build/asan/paddlehook (apt-get install clang).
FUZZ_CC       ?= clang
FUZZ_SECONDS  ?= 60
FUZZ_FLAGS    ?=
FIXTURES      ?= tests/fixtures/paddle
FUZZ_DIR      := $(BUILD)/fuzz
FUZZERS       := sig event template fcgi
FUZZ_SAN      := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS    = -std=c17 -D_GNU_SOURCE $(WARN) -O1 -g $(FUZZ_SAN) \
                 $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -Ifcgi -I$(BUILD)
# Largest input per target: bodies and scenarios are under 32 KiB.
FUZZ_MAXLEN_sig      := 4096
FUZZ_MAXLEN_event    := 32768
FUZZ_MAXLEN_template := 32768
FUZZ_MAXLEN_fcgi     := 32768
# fcgi reads a socket per input; everything else is pure.
FUZZ_TIMEOUT  := 10

.PHONY: fuzz fuzz-build fuzz-seeds fuzz-regress check-asan valgrind fuzz-toolchain

fuzz-toolchain:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { \
	  echo "$(FUZZ_CC) not found: fuzzing and build/asan/paddlehook need clang with libFuzzer"; \
	  echo "  apt-get install -y clang"; exit 1; }

# ---- libFuzzer targets ------------------------------------------------------

$(FUZZ_DIR)/obj/%.o: fcgi/%.c fcgi/*.h | $(BUILD) fuzz-toolchain
	@mkdir -p $(@D)
	@echo "  CC    $< (fuzz)"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

FUZZ_OBJS_sig      := sig
FUZZ_OBJS_event    := event
FUZZ_OBJS_template := template event
# The worker's request path; its log_line calls go to the target's checker.
FUZZ_OBJS_fcgi     := http webhook worker store db endpoints masterkey stats log sig event
FUZZ_LDFLAGS_fcgi  := -Wl,--wrap=log_line

define fuzz_target
$(FUZZ_DIR)/fuzz_$(1): tests/fuzz/fuzz_$(1).c $(patsubst %,$(FUZZ_DIR)/obj/%.o,$(FUZZ_OBJS_$(1))) fcgi/*.h
	@mkdir -p $$(@D)
	@echo "  LINK  $$@ (libFuzzer+ASan+UBSan)"
	@$(FUZZ_CC) $$(FUZZ_CFLAGS) -fsanitize=fuzzer $(FUZZ_LDFLAGS_$(1)) -o $$@ $$(filter %.c %.o,$$^) $$(LDLIBS_ALL)
endef
$(foreach t,$(FUZZERS),$(eval $(call fuzz_target,$(t))))

$(FUZZ_DIR)/mkseeds: tests/fuzz/mkseeds.c fcgi/sig.c fcgi/sig.h | $(BUILD)
	@mkdir -p $(@D)
	@echo "  LINK  $@"
	@$(CC) $(ALL_CFLAGS) -o $@ tests/fuzz/mkseeds.c fcgi/sig.c $(LDLIBS_ALL)

fuzz-build: $(patsubst %,$(FUZZ_DIR)/fuzz_%,$(FUZZERS))

# Seeds and dictionaries from the Paddle fixtures and the scenarios, every time
# (cheap); the corpus directories keep what the fuzzers found.
fuzz-seeds: $(FUZZ_DIR)/mkseeds
	@rm -rf $(FUZZ_DIR)/seeds
	@$(FUZZ_DIR)/mkseeds $(FIXTURES) fcgi/scenarios $(FUZZ_DIR)

# One target at a time, FUZZ_SECONDS each (a target stops at its first
# finding; the others still run); fails when any found something.
fuzz: fuzz-build fuzz-seeds
	@status=0; for t in $(FUZZERS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t tests/fuzz/regressions/$$t; \
	  echo "== fuzz_$$t: $(FUZZ_SECONDS) s"; \
	  $(FUZZ_DIR)/fuzz_$$t $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/seeds/$$t \
	    $$(test -d tests/fuzz/corpus/$$t && echo tests/fuzz/corpus/$$t) \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=$(FUZZ_TIMEOUT) -rss_limit_mb=2048 \
	    -max_len=$$(case $$t in sig) echo $(FUZZ_MAXLEN_sig);; event) echo $(FUZZ_MAXLEN_event);; \
	      template) echo $(FUZZ_MAXLEN_template);; *) echo $(FUZZ_MAXLEN_fcgi);; esac) \
	    -dict=$(FUZZ_DIR)/$$t.dict -print_final_stats=1 \
	    -artifact_prefix=tests/fuzz/regressions/$$t/ $(FUZZ_FLAGS) \
	    > $(FUZZ_DIR)/fuzz_$$t.log 2>&1; \
	  rc=$$?; \
	  grep -E '^#[0-9]+[[:space:]]+DONE' $(FUZZ_DIR)/fuzz_$$t.log; \
	  if [ $$rc -ne 0 ]; then \
	    grep -E 'runtime error|ERROR:|violated|^SUMMARY|Test unit written' $(FUZZ_DIR)/fuzz_$$t.log | head -n 8; \
	    echo "fuzz_$$t found a problem (exit $$rc); log: $(FUZZ_DIR)/fuzz_$$t.log"; status=1; \
	  fi; \
	done; exit $$status

# Every saved finding and checked-in seed, once each; fails on any crash.
fuzz-regress: fuzz-build
	@status=0; for t in $(FUZZERS); do \
	  files=$$(find tests/fuzz/regressions/$$t tests/fuzz/corpus/$$t -type f 2>/dev/null | sort); \
	  if [ -z "$$files" ]; then echo "fuzz_$$t: no regression inputs"; continue; fi; \
	  n=$$(echo "$$files" | wc -l); \
	  if $(FUZZ_DIR)/fuzz_$$t -runs=1 $$files > $(FUZZ_DIR)/regress_$$t.log 2>&1; then \
	    echo "fuzz_$$t: $$n inputs ok"; \
	  else \
	    grep -E 'runtime error|ERROR:|violated|^SUMMARY|Running: ' $(FUZZ_DIR)/regress_$$t.log | tail -n 8; \
	    echo "fuzz_$$t: FAILED (log: $(FUZZ_DIR)/regress_$$t.log)"; status=1; \
	  fi; \
	done; exit $$status

# ---- ASan+UBSan worker ------------------------------------------------------

ASAN_DIR  := $(BUILD)/asan
ASAN_OBJS := $(patsubst fcgi/%.c,$(ASAN_DIR)/obj/%.o,$(SRCS) fcgi/main.c) \
             $(ASAN_DIR)/obj/migrations.o $(ASAN_DIR)/obj/scenarios.o
ASAN_LOGS := $(ASAN_DIR)/logs
CHECK_ASAN_ARGS ?= -j $(CHECK_JOBS)

# clang, not gcc: gcc's separate libubsan writes its reports to stderr whatever
# log_path says, and does not check pointer arithmetic on NULL.
$(ASAN_DIR)/obj/%.o: fcgi/%.c fcgi/*.h | $(BUILD) fuzz-toolchain
	@mkdir -p $(@D)
	@echo "  CC    $< (ASan+UBSan)"
	@$(FUZZ_CC) $(ALL_CFLAGS) $(SAN_FLAGS) -c -o $@ $<

$(ASAN_DIR)/obj/migrations.o $(ASAN_DIR)/obj/scenarios.o: $(ASAN_DIR)/obj/%.o: $(BUILD)/%.c fcgi/embedded.h | fuzz-toolchain
	@mkdir -p $(@D)
	@echo "  CC    $< (ASan+UBSan)"
	@$(FUZZ_CC) $(ALL_CFLAGS) $(SAN_FLAGS) -c -o $@ $<

$(ASAN_DIR)/paddlehook: $(ASAN_OBJS)
	@echo "  LINK  $@ (ASan+UBSan)"
	@$(FUZZ_CC) $(ALL_CFLAGS) $(SAN_FLAGS) -o $@ $^ $(LDLIBS_ALL)

# Reports go to files (log_path), one per process, so a report from a worker,
# the supervisor or any CLI command fails the run even when no test noticed.
# Workers end with _exit(), which skips LeakSanitizer: `make valgrind` checks
# their leaks.
check-asan: deps $(ASAN_DIR)/paddlehook
	@rm -rf $(ASAN_LOGS) && mkdir -p $(ASAN_LOGS)
	@status=0; \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:log_path=$(abspath $(ASAN_LOGS))/asan \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(abspath $(ASAN_LOGS))/ubsan \
	LSAN_OPTIONS=log_path=$(abspath $(ASAN_LOGS))/lsan \
	PADDLEHOOK_BIN=$(abspath $(ASAN_DIR)/paddlehook) python3 tests/run.py $(CHECK_ASAN_ARGS) || status=$$?; \
	if [ -n "$$(ls -A $(ASAN_LOGS))" ]; then \
	  echo "==== sanitizer reports ($(ASAN_LOGS)) ===="; cat $(ASAN_LOGS)/*; status=1; \
	else echo "check-asan: no sanitizer reports"; fi; \
	exit $$status

# ---- valgrind ----------------------------------------------------------------

VALGRIND_DIR      := $(BUILD)/valgrind
VALGRIND_REQUESTS ?= 3000
VALGRIND_OPTS     := --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite \
                     --show-leak-kinds=definite --error-exitcode=42 --num-callers=30

# The harness runs PADDLEHOOK_BIN for every command; only `serve` (and the
# workers it forks) runs under memcheck.
$(VALGRIND_DIR)/paddlehook: $(BUILD)/paddlehook tests/fuzz/fuzz.mk
	@mkdir -p $(@D)/logs
	@printf '%s\n' '#!/bin/sh' '# generated by tests/fuzz/fuzz.mk' \
	  'if [ "$$1" = serve ]; then' \
	  '  exec valgrind $(VALGRIND_OPTS) --log-file=$(abspath $(VALGRIND_DIR))/logs/vg.%p.log $(abspath $(BUILD)/paddlehook) "$$@"' \
	  'fi' \
	  'exec $(abspath $(BUILD)/paddlehook) "$$@"' > $@
	@chmod 755 $@

valgrind: deps all $(VALGRIND_DIR)/paddlehook
	@command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)"; exit 1; }
	@rm -rf $(VALGRIND_DIR)/logs && mkdir -p $(VALGRIND_DIR)/logs
	@PADDLEHOOK_BIN=$(abspath $(VALGRIND_DIR)/paddlehook) python3 tests/valgrind_load.py \
	  $(VALGRIND_REQUESTS)
	@status=0; n=0; \
	for f in $(VALGRIND_DIR)/logs/vg.*.log; do \
	  n=$$((n + 1)); \
	  summary=$$(grep -h 'ERROR SUMMARY' $$f | tail -n 1); \
	  lost=$$(grep -h 'definitely lost:' $$f | tail -n 1); \
	  echo "$$f: $${summary#*== } $${lost:+/ $${lost#*== }}"; \
	  case "$$summary" in *"ERROR SUMMARY: 0 errors"*) ;; *) status=1; cat $$f;; esac; \
	  grep -q 'HEAP SUMMARY' $$f || { echo "$$f: process did not exit normally"; status=1; }; \
	done; \
	[ $$n -ge 2 ] || { echo "valgrind: expected logs of the supervisor and its worker, found $$n"; status=1; }; \
	exit $$status

.DEFAULT_GOAL := $(fuzz_default_goal)
