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
            postgresql nginx-light python3 curl

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
CORE := fcgi/sig.c fcgi/event.c fcgi/template.c
UNIT := $(sort $(wildcard tests/unit/*.c))

.PHONY: all check unit demo deps install uninstall clean

# Larger targets keep their rules beside their files.
include $(wildcard tests/fuzz/fuzz.mk bench/bench.mk tests/chaos.mk)

all: $(BUILD)/paddlehook

$(BUILD):
	@mkdir -p $(BUILD) $(BUILD)/asan

$(BUILD)/migrations.c: $(MIGRATIONS) fcgi/embed.sh | $(BUILD)
	@echo "  GEN   $@"
	@sh fcgi/embed.sh migrations $(MIGRATIONS) > $@.tmp && mv $@.tmp $@

$(BUILD)/scenarios.c: $(SCENARIOS) fcgi/embed.sh | $(BUILD)
	@echo "  GEN   $@"
	@sh fcgi/embed.sh scenarios $(SCENARIOS) > $@.tmp && mv $@.tmp $@

$(BUILD)/%.o: fcgi/%.c fcgi/*.h | $(BUILD)
	@echo "  CC    $<"
	@$(CC) $(ALL_CFLAGS) $(HARDEN) -c -o $@ $<

$(BUILD)/migrations.o $(BUILD)/scenarios.o: $(BUILD)/%.o: $(BUILD)/%.c fcgi/embedded.h
	@echo "  CC    $<"
	@$(CC) $(ALL_CFLAGS) $(HARDEN) -c -o $@ $<

$(BUILD)/paddlehook: $(OBJS) $(BUILD)/main.o
	@echo "  LINK  $@"
	@$(CC) $(ALL_CFLAGS) $(LDHARDEN) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/unit-tests: $(UNIT) $(CORE) fcgi/*.h | $(BUILD)
	@echo "  LINK  $@"
	@$(CC) $(ALL_CFLAGS) $(HARDEN) $(LDHARDEN) -o $@ $(UNIT) $(CORE) $(LDLIBS_ALL)

$(BUILD)/asan/unit-tests: $(UNIT) $(CORE) fcgi/*.h | $(BUILD)
	@echo "  LINK  $@ (ASan+UBSan)"
	@$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -o $@ $(UNIT) $(CORE) $(LDLIBS_ALL)

unit: $(BUILD)/unit-tests $(BUILD)/asan/unit-tests

check: deps all unit
	python3 tests/run.py --unit $(BUILD)/unit-tests --unit $(BUILD)/asan/unit-tests

demo: deps all
	python3 tests/demo.py

# Installs missing Debian packages when root; otherwise says what to run.
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else \
	    echo "missing packages; run as root:"; \
	    echo "  apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/paddlehook/sql/migrations \
	  $(DESTDIR)$(PREFIX)/share/paddlehook/nginx
	install -m 0755 $(BUILD)/paddlehook $(DESTDIR)$(PREFIX)/bin/paddlehook
	install -m 0644 $(MIGRATIONS) $(DESTDIR)$(PREFIX)/share/paddlehook/sql/migrations/
	install -m 0644 nginx/*.conf $(DESTDIR)$(PREFIX)/share/paddlehook/nginx/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/paddlehook
	rm -rf $(DESTDIR)$(PREFIX)/share/paddlehook

clean:
	rm -rf $(BUILD)
