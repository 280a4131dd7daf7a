# The README's two commands. Thin wrappers: the work is in CMake, CTest, pytest and scripts/.
.PHONY: all build test unit fuzz system run bench clean deps

BUILD_DIR ?= build/dev
FUZZ_DIR ?= build/fuzz
JOBS ?= $(shell nproc)
PYTEST ?= /usr/bin/python3 -m pytest

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

bench: build
	@echo "benchmarks arrive with the control-channel and tunnel work (see bench/README.md)"

clean:
	rm -rf build var
