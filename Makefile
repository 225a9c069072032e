# Daftka. `make run` and `make test` work on a fresh Debian machine with Go:
# they install what is missing (librocksdb-dev via apt-get, Go modules).

GO          ?= go
BIN         := bin
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
# 2026.2.2 is module version v0.8.2 (the proxy serves it by module version only).
STATICCHECK_VERSION := v0.8.2
SEEDS       ?= 2000
# Packages tested with the race detector: everything but the deterministic
# raft core, which starts no goroutines (its simulator runs thousands of
# seeds and is tested without -race below).
RACE_PKGS    = $(shell $(GO) list ./... | grep -v '/raft$$')

.PHONY: all deps build run test test-race test-raft lint sim crash bench etcdctl clean

all: build

# deps installs the C library RocksDB when pkg-config cannot find it, and
# downloads Go modules.
deps:
	@pkg-config --exists rocksdb 2>/dev/null || { \
		echo "installing librocksdb-dev (apt-get)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq librocksdb-dev pkg-config >/dev/null; }
	@$(GO) mod download

build: deps
	$(GO) build -o $(BIN)/daftka ./cmd/daftka

# run starts a single-node cluster with the embedded defaults:
# data in ./data/daftka, gateway http://127.0.0.1:4001, metrics 127.0.0.1:9568.
run: build
	./$(BIN)/daftka run $(ARGS)

test: deps test-race test-raft

test-race:
	$(GO) test -race -count=1 -timeout 20m $(RACE_PKGS)

test-raft:
	$(GO) test -count=1 -timeout 10m ./raft/...

lint: deps $(STATICCHECK)
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# sim runs the Raft simulator over SEEDS seeds.
sim:
	$(GO) test -count=1 -timeout 60m -run 'TestSimulator' ./raft/ -args -sim.seeds=$(SEEDS)

# crash runs the SIGKILL crash test with more cycles than `make test` does.
crash: build
	DAFTKA_CRASH_CYCLES=$${CYCLES:-50} $(GO) test -count=1 -timeout 60m -run TestCrash -v ./tools/crashtest/

bench: deps
	$(GO) test -run '^$$' -bench . -benchmem ./...

# etcdctl builds etcdctl (a tool of this module) for inspecting metadata.
etcdctl: deps
	$(GO) build -o $(BIN)/etcdctl go.etcd.io/etcd/etcdctl/v3

clean:
	rm -rf $(BIN)
