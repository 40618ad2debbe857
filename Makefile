# Entry points. The README's quickstart is `make demo` and `make test`; both install what is missing
# (scripts/install_deps.sh), configure and build with CMake, and fetch the demo data.
#   make demo     run the demo pipeline (Makefile.pipeline, PIPELINE=demo) on real data
#   make test     build and run the whole test suite (CTest): what CI runs
#   make test-quick  build and run the quick tier only (CTest label `unit`, about 25 s)
#   make build    configure and build only
BUILD ?= build
JOBS ?= $(shell nproc)
BUILD_TYPE ?= Release
PIPELINE ?= demo

.PHONY: all deps configure build data test test-quick demo clean
all: build

deps:
	@bash scripts/install_deps.sh

$(BUILD)/build.ninja: CMakeLists.txt
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

configure: deps
	@$(MAKE) --no-print-directory $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

data: deps
	@bash scripts/fetch_data.sh data

test: build data
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-quick: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

demo: build data
	$(MAKE) --no-print-directory -f Makefile.pipeline PIPELINE=$(PIPELINE) BIN=$(BUILD)/bin

clean:
	rm -rf $(BUILD)
