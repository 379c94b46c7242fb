# shoplog — the two commands: `make up` runs the whole system, `make test` runs every test.
# Both install redis-server and nginx with apt-get when they are missing (Debian/Ubuntu).

CARGO   ?= cargo
PYTHON  ?= python3
SHOPLOG := target/release/shoplog
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: up down status deps build lint test test-rust test-http test-faults python-deps clean

## up: install what is missing, build in release, run the stack in the foreground (Ctrl-C stops it)
up: deps build
	$(SHOPLOG) up

## down / status: stop or inspect a stack started with `shoplog up --detach`
down:
	$(SHOPLOG) down
status:
	$(SHOPLOG) status

## deps: redis-server and nginx from apt when missing
deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build:
	$(CARGO) build --release --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --workspace -- -D warnings

python-deps:
	@$(PYTHON) -m pip install -q -r test/requirements.txt 2>/dev/null || \
	  $(PYTHON) -m pip install -q --break-system-packages -r test/requirements.txt

## test: everything CI runs — lint, Rust tests (real redis-servers), the HTTP suite against a real stack
test: deps build lint python-deps test-rust test-http

test-rust:
	$(CARGO) test --release --workspace

## test-http: the HTTP suite, including the quick fault-injection scenarios
test-http:
	SHOPLOG_BIN=$(CURDIR)/$(SHOPLOG) $(PYTHON) -m pytest test -q -m "not slow"

## test-faults: every fault-injection scenario (kill each component, chaos, 2 replicas); ~8 min (release build)
test-faults: deps build python-deps
	SHOPLOG_BIN=$(CURDIR)/$(SHOPLOG) $(PYTHON) -m pytest test/faults -q

clean:
	$(CARGO) clean
