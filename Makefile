# fundrecs: the extension and the fundrecs_decoder output plugin (PGXS).
#
#   make && make install          build and install
#   make installcheck             pg_regress suite on its own temporary server
#   make -C shipper               the fundrecs_shipper program
#   make demo                     the whole pipeline on a throwaway cluster

EXTENSION = fundrecs
EXTVERSION = 1.2

MODULE_big = fundrecs_decoder
OBJS = fundrecs_decoder.o fundrecs_options.o fundrecs_json.o fundrecs_products.o \
	fundrecs_load.o
HEADERS =

DATA = fundrecs--1.0.sql $(wildcard fundrecs--*--*.sql)

TESTS = $(wildcard sql/*.sql)
REGRESS = $(patsubst sql/%.sql,%,$(TESTS))
REGRESS_OPTS = --temp-instance=./tmp_check --temp-config=$(srcdir)/test/fundrecs.conf \
	--load-extension=fundrecs

PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Werror

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

.PHONY: demo shipper check-all
shipper:
	$(MAKE) -C shipper PG_CONFIG=$(PG_CONFIG)

demo:
	bash scripts/demo.sh

check-all:
	bash scripts/test-all.sh
