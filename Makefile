# Thin wrapper: CMake builds, scripts under tests/ and deps/ do the rest. See README / DESIGN.md.
#   make build | asan | fuzz-build | fuzz | test | test-long | run | bench | soak | install | deb | format | check-format | clean | deps
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
# make fuzz: seconds of fuzzing per target (tests/fuzz/*.c but harness.c)
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = $(filter-out harness,$(basename $(notdir $(wildcard tests/fuzz/*.c))))
SVC        ?= $(BUILD)/services
JOBS       ?= 2
PREFIX     ?= /usr/local

# Every C file we own; the dirs may not all exist yet, hence 2>/dev/null.
FMT_FILES = $(shell find core bindings tests -type f \( -name '*.c' -o -name '*.h' \) 2>/dev/null | sort)

SCRIPT_ENV = BUILD='$(BUILD)' ASAN_BUILD='$(ASAN_BUILD)' FUZZ_BUILD='$(FUZZ_BUILD)' SVC='$(SVC)'

.PHONY: all deps build asan fuzz-build fuzz test test-long run bench soak install deb format check-format clean

all: build

deps:
	bash deps/install.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD) -j$(JOBS)

asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSK_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j$(JOBS)

# the libFuzzer targets (tests/fuzz) under ASan/UBSan: clang, no jemalloc, no unit or e2e tests in this tree
fuzz-build: deps
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSK_FUZZ=ON
	cmake --build $(FUZZ_BUILD) -j$(JOBS)

# each target FUZZ_SECONDS over its seeds and regressions; a crash's input lands in tests/fuzz/regressions/<target>/,
# to be kept there (committed) once the bug is fixed
fuzz: fuzz-build
	@rc=0; for t in $(FUZZ_TARGETS); do \
	    FUZZ_ARTIFACTS=tests/fuzz/regressions/$$t bash tests/fuzz/run.sh $(FUZZ_BUILD)/fuzz_$$t $$t $(FUZZ_SECONDS) || rc=1; \
	done; exit $$rc

test: build asan fuzz-build
	$(SCRIPT_ENV) bash tests/run.sh

# the outage scenarios at the issue's full lengths (MySQL down 60 s, Kafka 30 s), and under ASan
test-long: build asan
	$(SCRIPT_ENV) bash tests/run.sh long

run: build
	$(SCRIPT_ENV) bash tests/harness/run.sh

bench: build
	$(SCRIPT_ENV) bash tests/bench/run.sh

# not in CI: SOAK_SECONDS (1800) of paced mixed traffic on the shipped config, on services of its own
# ($(BUILD)/services-soak); fails when RSS or Lua memory keeps growing after the warm-up (tests/soak/soak.py)
soak: build
	$(SCRIPT_ENV) bash tests/soak/run.sh

# PREFIX (/usr/local) and DESTDIR (staging root) as usual; the layout is in conf/packaging/install.cmake
install: build
	DESTDIR='$(DESTDIR)' cmake --install $(BUILD) --prefix '$(PREFIX)'

# $(BUILD)/seckilld_<version>_<arch>.deb, prefix /usr, Depends from dpkg-shlibdeps
deb: build
	cd $(BUILD) && cpack -G DEB

# With no files, clang-format would read stdin and wait, so guard the empty case.
format:
	$(if $(FMT_FILES),clang-format -i $(FMT_FILES),@echo "no C files to format")

check-format:
	$(if $(FMT_FILES),clang-format --dry-run --Werror $(FMT_FILES),@echo "no C files to check")

# Stop services first: deleting a running mariadbd's datadir leaves it writing to deleted files.
clean:
	bash tests/harness/services.sh stop $(SVC)
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
