# The gates and entry points of the ITSM service. `make run` and `make test` are all a fresh
# machine needs (Rust toolchain and a C compiler; SQLite and libpq are built from source).

CARGO ?= cargo
POSTGRES_URL ?= $(ITSM_TEST_POSTGRES_URL)

.PHONY: run test lint lint-contract fuzz fmt openapi check-domain-deps migrate bench soak bench-cmdb bench-webhooks

## Serve the API on 127.0.0.1:8080 with the embedded SQLite database in ./data.
run:
	$(CARGO) run --release -p itsm-api --bin itsm -- serve

## The whole test suite: unit tests, the OpenAPI drift check, and the HTTP suite on SQLite
## (and on PostgreSQL when ITSM_TEST_POSTGRES_URL is set).
test:
	ITSM_TEST_POSTGRES_URL=$(POSTGRES_URL) $(CARGO) test --workspace

## Formatting, clippy with warnings as errors, the domain's independence from I/O crates, the
## contract under Redocly `recommended` and openapi-spec-validator, and two clients generated
## from it (TypeScript and Python) compiling with typed problems (tools pinned in .tools/).
lint: check-domain-deps lint-contract
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint-contract:
	contract/lint.sh
	contract/clients.sh

## Property-based fuzzing of every operation (schemathesis, all checks, stateful phase) against
## a freshly started `itsm` on SQLite, and on PostgreSQL when ITSM_TEST_POSTGRES_URL is set.
## FUZZ_SECONDS bounds each backend (default 200).
fuzz:
	ITSM_TEST_POSTGRES_URL=$(POSTGRES_URL) CARGO=$(CARGO) contract/fuzz.sh

check-domain-deps:
	@for crate in diesel actix-web actix-http; do \
		if $(CARGO) tree -p itsm-domain -e normal -i $$crate >/dev/null 2>&1; then \
			echo "domain must not depend on $$crate"; exit 1; \
		fi; \
	done
	@echo "domain depends on no diesel or actix crate"

fmt:
	$(CARGO) fmt --all

## Regenerate the checked-in contract from the code.
openapi:
	$(CARGO) run -q -p itsm-api --bin itsm -- openapi > openapi/openapi.json

## Apply migrations to ITSM_DATABASE_URL (or the embedded default) and exit.
migrate:
	$(CARGO) run -q -p itsm-api --bin itsm -- migrate

## The benchmark: release build, fresh databases, seeded through `itsm seed`, a Rust load
## generator. Set ITSM_BENCH_POSTGRES_URL for PostgreSQL too, BENCH_QUICK=1 for a smoke run.
bench:
	$(CARGO) build --release -p itsm-api -p itsm-integration-tests --bin itsm --bin itsm-bench
	./target/release/itsm-bench

## The CMDB benchmark: a layered graph of 100,000 items seeded through reconciliation, impact
## analysis and reconciliation at concurrency 16 (BENCH_CMDB_ITEMS=N to scale it).
bench-cmdb:
	$(CARGO) build --release -p itsm-api -p itsm-integration-tests --bin itsm --bin itsm-cmdb-bench
	./target/release/itsm-cmdb-bench

## The webhook delivery benchmark: signed deliveries per second to a local receiver, and the
## outbox-to-receiver lag at a steady rate (BENCH_WEBHOOK_EVENTS, BENCH_WEBHOOK_RATE and
## BENCH_WEBHOOK_SECONDS scale it; ITSM_BENCH_POSTGRES_URL adds PostgreSQL).
bench-webhooks:
	$(CARGO) build --release -p itsm-api -p itsm-integration-tests --bin itsm --bin itsm-webhook-bench
	./target/release/itsm-webhook-bench

## A soak: every benchmark scenario mixed at concurrency 16 for SOAK_SECONDS (default 600),
## minute by minute, with the server's memory; on PostgreSQL too when ITSM_BENCH_POSTGRES_URL
## is set.
SOAK_SECONDS ?= 600
soak:
	$(CARGO) build --release -p itsm-api -p itsm-integration-tests --bin itsm --bin itsm-bench
	BENCH_SOAK_SECONDS=$(SOAK_SECONDS) ./target/release/itsm-bench
