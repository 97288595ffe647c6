# paddlehook - Paddle Billing webhooks into PostgreSQL, behind nginx.
#   make          build build/paddlehook
#   make check    unit tests (plain and ASan+UBSan) + integration tests
#   make demo     throwaway PostgreSQL + nginx, signed events, stored state
#   make install  PREFIX=/usr/local DESTDIR=

PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
PKGS    := libsodium yajl libpq
BUILD   := build

# Debian packages the build and the tests need (make deps installs them).
DEB_PKGS := gcc make pkg-config libfcgi-dev libsodium-dev libyajl-dev libpq-dev \
            postgresql nginx-light python3 curl spawn-fcgi groff-base clang valgrind openssl

WARN    := -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wvla -Wstrict-prototypes \
           -Wmissing-prototypes -Wpointer-arith -Wcast-qual -Wundef
HARDEN  := -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fstack-clash-protection \
           -fcf-protection -fPIE
CFLAGS  ?= -O2 -g
ALL_CFLAGS  = -std=c17 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -Ifcgi -I$(BUILD)
LDLIBS_ALL  = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lfcgi
LDHARDEN    = -pie -Wl,-z,relro,-z,now -Wl,-z,noexecstack
SAN_FLAGS   = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

SRCS := $(filter-out fcgi/main.c,$(wildcard fcgi/*.c))
OBJS := $(patsubst fcgi/%.c,$(BUILD)/%.o,$(SRCS)) $(BUILD)/migrations.o $(BUILD)/scenarios.o
MIGRATIONS := $(sort $(wildcard sql/migrations/*.sql))
SCENARIOS := $(sort $(wildcard fcgi/scenarios/*.json))
# The pure core that unit tests and fuzzers link without FastCGI or libpq.
CORE := fcgi/sig.c fcgi/event.c fcgi/template.c fcgi/masterkey.c fcgi/shown.c
UNIT := $(sort $(wildcard tests/unit/*.c))

.PHONY: all check unit demo deps install uninstall clean FORCE

# Larger targets keep their rules beside their files.
include $(wildcard tests/fuzz/fuzz.mk bench/bench.mk tests/chaos.mk)

all: $(BUILD)/paddlehook

$(BUILD):
	@mkdir -p $(BUILD) $(BUILD)/asan

# The directories too: a file removed or renamed changes the list without touching any file in it.
$(BUILD)/migrations.c: $(MIGRATIONS) sql/migrations fcgi/embed.sh | $(BUILD)
	@echo "  GEN   $@"
	@sh fcgi/embed.sh migrations $(MIGRATIONS) > $@.tmp && mv $@.tmp $@

$(BUILD)/scenarios.c: $(SCENARIOS) fcgi/scenarios fcgi/embed.sh | $(BUILD)
	@echo "  GEN   $@"
	@sh fcgi/embed.sh scenarios $(SCENARIOS) > $@.tmp && mv $@.tmp $@

$(BUILD)/%.o: fcgi/%.c fcgi/*.h | $(BUILD)
	@echo "  CC    $<"
	@$(CC) $(ALL_CFLAGS) $(HARDEN) -c -o $@ $<

$(BUILD)/migrations.o $(BUILD)/scenarios.o: $(BUILD)/%.o: $(BUILD)/%.c fcgi/embedded.h
	@echo "  CC    $<"
	@$(CC) $(ALL_CFLAGS) $(HARDEN) -c -o $@ $<

# The version `paddlehook --version` prints: git describe of the tree it is built from, if that tree is a git
# work tree of its own (not a copy inside another repository); `make VERSION=1.2.3` sets it. When git cannot
# tell (no git, or `sudo make install` in a tree another user owns, which git refuses) the version already built
# stays, else "unknown". git must not write the index here: run as root it would leave it root's.
# version.h changes only when the version does.
GIT_HERE := git --no-optional-locks -c safe.directory='$(CURDIR)' -C '$(CURDIR)'
VERSION ?= $(shell [ "$$($(GIT_HERE) rev-parse --show-toplevel 2>/dev/null)" = '$(CURDIR)' ] && \
                   $(GIT_HERE) describe --tags --always --dirty 2>/dev/null)

$(BUILD)/version.h: FORCE | $(BUILD)
	@if [ -n '$(VERSION)' ] || [ ! -f $@ ]; then \
	  printf '#define PADDLEHOOK_VERSION "%s"\n' '$(or $(VERSION),unknown)' > $@.tmp; \
	  if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi; \
	fi

$(BUILD)/main.o $(BUILD)/asan/obj/main.o: $(BUILD)/version.h

FORCE:

$(BUILD)/paddlehook: $(OBJS) $(BUILD)/main.o
	@echo "  LINK  $@"
	@$(CC) $(ALL_CFLAGS) $(LDHARDEN) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/unit-tests: $(UNIT) $(CORE) fcgi/stats.c fcgi/*.h | $(BUILD)
	@echo "  LINK  $@"
	@$(CC) $(ALL_CFLAGS) $(HARDEN) $(LDHARDEN) -o $@ $(UNIT) $(CORE) $(LDLIBS_ALL)

$(BUILD)/asan/unit-tests: $(UNIT) $(CORE) fcgi/stats.c fcgi/*.h | $(BUILD)
	@echo "  LINK  $@ (ASan+UBSan)"
	@$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -o $@ $(UNIT) $(CORE) $(LDLIBS_ALL)

unit: $(BUILD)/unit-tests $(BUILD)/asan/unit-tests

# The hostile-input, error and delivery suites also run against a worker
# built with ASan+UBSan (any sanitizer report fails); then everything runs
# against the real build, and that run's last line is the verdict.
CHECK_ASAN_SUITE := -q -k test_errors -k test_hostile -k test_least_privilege -k test_signature -k test_delivery -k test_fixtures -k test_ops
# Integration modules run at once, each with a stack of its own: they mostly wait (for deadlines, restarts,
# the database), so three share two cores well.
CHECK_JOBS ?= 3

check: deps all unit
	$(MAKE) --no-print-directory check-asan CHECK_ASAN_ARGS="$(CHECK_ASAN_SUITE) -j $(CHECK_JOBS)"
	python3 tests/run.py -j $(CHECK_JOBS) --unit $(BUILD)/unit-tests --unit $(BUILD)/asan/unit-tests

demo: deps all
	python3 tests/demo.py

# Installs the missing Debian packages $(1) when root; otherwise says what to run.
# $(2): more shell that may append to $$missing (used by bench-deps).
define install_missing_debs
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	$(2) \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else \
	    echo "missing packages; run as root:"; \
	    echo "  apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
endef

deps:
	$(call install_missing_debs,$(DEB_PKGS),)

install: all
	@echo "  GEN   $(BUILD)/dist (units and man page for PREFIX=$(PREFIX))"
	@mkdir -p $(BUILD)/dist
	@for f in paddlehook.socket paddlehook.service paddlehook-listen.service; do \
	  sed 's|/usr/local/bin/paddlehook|$(PREFIX)/bin/paddlehook|g' systemd/$$f > $(BUILD)/dist/$$f || exit 1; \
	done
	@sed 's|/usr/local/|$(PREFIX)/|g' docs/paddlehook.8 > $(BUILD)/dist/paddlehook.8
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/paddlehook/sql/migrations \
	  $(DESTDIR)$(PREFIX)/share/paddlehook/nginx $(DESTDIR)$(PREFIX)/lib/systemd/system \
	  $(DESTDIR)$(PREFIX)/lib/sysusers.d $(DESTDIR)$(PREFIX)/lib/tmpfiles.d \
	  $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/doc/paddlehook
	install -m 0755 $(BUILD)/paddlehook $(DESTDIR)$(PREFIX)/bin/paddlehook
	install -m 0644 $(MIGRATIONS) $(DESTDIR)$(PREFIX)/share/paddlehook/sql/migrations/
	install -m 0644 nginx/paddlehook-upstream.conf nginx/paddlehook.conf nginx/paddle-ips.conf \
	  $(DESTDIR)$(PREFIX)/share/paddlehook/nginx/
	install -m 0644 $(BUILD)/dist/paddlehook.socket $(BUILD)/dist/paddlehook.service \
	  $(BUILD)/dist/paddlehook-listen.service $(DESTDIR)$(PREFIX)/lib/systemd/system/
	install -m 0644 systemd/paddlehook.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/paddlehook.conf
	install -m 0644 systemd/paddlehook.tmpfiles $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/paddlehook.conf
	install -m 0644 $(BUILD)/dist/paddlehook.8 $(DESTDIR)$(PREFIX)/share/man/man8/paddlehook.8
	install -m 0644 docs/paddlehook.conf.example $(DESTDIR)$(PREFIX)/share/doc/paddlehook/

# Removes the files install put there, then paddlehook's own directories if
# nothing else is left in them.
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/paddlehook
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/share/paddlehook/sql/migrations/,$(notdir $(MIGRATIONS)))
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/share/paddlehook/nginx/,paddlehook-upstream.conf \
	  paddlehook.conf paddle-ips.conf)
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/lib/systemd/system/,paddlehook.socket \
	  paddlehook.service paddlehook-listen.service)
	rm -f $(DESTDIR)$(PREFIX)/lib/sysusers.d/paddlehook.conf $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/paddlehook.conf
	rm -f $(DESTDIR)$(PREFIX)/share/man/man8/paddlehook.8
	rm -f $(DESTDIR)$(PREFIX)/share/doc/paddlehook/paddlehook.conf.example
	rmdir $(DESTDIR)$(PREFIX)/share/paddlehook/sql/migrations $(DESTDIR)$(PREFIX)/share/paddlehook/sql \
	  $(DESTDIR)$(PREFIX)/share/paddlehook/nginx $(DESTDIR)$(PREFIX)/share/paddlehook \
	  $(DESTDIR)$(PREFIX)/share/doc/paddlehook 2>/dev/null || true

clean:
	rm -rf $(BUILD)
