# The README's two commands. Thin wrappers: the work is in CMake, CTest, pytest and scripts/.
.PHONY: all build test unit fuzz system run bench clean deps

BUILD_DIR ?= build/dev
FUZZ_DIR ?= build/fuzz
JOBS ?= $(shell nproc)
PYTEST ?= /usr/bin/python3 -m pytest

# ccache (when installed) may reuse objects across clones in different directories.
export CCACHE_BASEDIR ?= $(CURDIR)
export CCACHE_NOHASHDIR ?= 1

all: build

deps:
	@scripts/install-deps

build: deps
	@cmake --preset dev >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS)

unit: build
	@ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)

fuzz: deps
	@cmake --preset fuzz >/dev/null
	@cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzz_all
	@scripts/run-fuzz $(FUZZ_DIR)

system: build
	@TORWART_BUILD_DIR=$(abspath $(BUILD_DIR)) $(PYTEST) -q tests/system

test: unit fuzz system

run: build
	@scripts/run-demo $(BUILD_DIR)

# Benchmarks print one JSON line per figure (ratios against their peers) into bench/results/.
# Not part of `make test`: timings on shared machines are for side-by-side ratios only.
bench: build
	@mkdir -p bench/results
	@echo "P1: policy decisions (1k rules x 10k targets)"
	@$(BUILD_DIR)/bench/bench_p1_policy | tee bench/results/P1.json
	@echo "A1: audit append, group commit vs one fsync per record (64 writers)"
	@$(BUILD_DIR)/bench/bench_a1_audit | tee bench/results/A1.json
	@echo "Q1: mutual-TLS MQTT connects, torwart broker + plugin vs plain Mosquitto (200 devices)"
	@bench/q1_prepare $(BUILD_DIR) $${Q1_DEVICES:-200} $${Q1_RATE:-500} | tee bench/results/Q1.json
	@echo "T1/L1/S1/M1: tunnels, torwart vs ssh -J and a 3-hop haproxy TLS chain (TUNNEL_BENCH_ARGS=...)"
	@for b in T1 L1 S1 M1; do \
	  /usr/bin/python3 bench/tunnel_bench.py $$b --build-dir $(BUILD_DIR) $(TUNNEL_BENCH_ARGS) \
	    | tee bench/results/$$b.json; done

clean:
	rm -rf build var
