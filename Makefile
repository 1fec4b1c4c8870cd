# webhooks: PGXS build.  Warnings become errors only in CI (PG_CFLAGS=-Werror).

MODULE_big = webhooks
OBJS = \
	src/webhooks.o \
	src/url.o \
	src/signing.o \
	src/http_engine.o \
	src/http_request.o \
	src/payload.o \
	src/queue.o \
	src/unrouted.o \
	src/validate.o \
	src/functions.o \
	src/launcher.o \
	src/worker.o

EXTENSION = webhooks
DATA = sql/webhooks--1.0.sql sql/webhooks--1.0--1.1.sql sql/webhooks--1.1--1.2.sql sql/webhooks--1.2--1.3.sql sql/webhooks--1.3--1.4.sql sql/webhooks--1.4--1.5.sql sql/webhooks--1.5--1.6.sql
PGFILEDESC = "webhooks - signed, reliably delivered HTTPS webhooks"

PG_CPPFLAGS = -I$(srcdir)/src
SHLIB_LINK = -lcurl -lssl -lcrypto

# pg_regress: inputs in sql/, outputs in expected/, on a temp instance that
# preloads the library (the pg_cron trick).
REGRESS = schema url_validation wizard_errors emit trigger unrouted_events event_dates roles queue_plans
REGRESS_OPTS = --temp-instance=tmp_check_regress --temp-config=$(srcdir)/test/regress.conf

# isolation specs live in test/specs, their outputs in test/expected
ISOLATION = activation_race record_lease activation_split activation_record orphan_sweep prune_redeliver activation_redeliver activation_claim route_cache
ISOLATION_OPTS = --inputdir=$(srcdir)/test --temp-instance=tmp_check_iso --temp-config=$(srcdir)/test/regress.conf

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_check_regress tmp_check_iso output_iso results regression.diffs regression.out

# Header dependencies: the compiler writes each object's list of headers
# (-MMD -MP) into .deps/, which the next make reads.  This is PGXS's own
# --enable-depend machinery (Makefile.global, PostgreSQL 15 to 18), which a
# packaged server (Debian's postgresql-server-dev) ships switched off;
# "override" switches it on for this tree only.  make clean removes .deps/.
override autodepend = yes

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# after the include: Makefile.global resets PROVE_FLAGS
PROVE_FLAGS = -I $(srcdir)/test

# JIT bitcode: rebuilt with its object, so it follows the same headers
ifeq ($(with_llvm), yes)
$(patsubst %.o,%.bc,$(OBJS)): %.bc: %.o
endif
