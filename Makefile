# memtrain: build, install missing dependencies, test, benchmark, demo.
#
#   make demo    install what is missing, build, fetch data, train a small model with mpirun
#   make test    install what is missing, build, run every test
#   make bench   print the speed and memory figures
#   make SANITIZER=address test   (or undefined) the same tests under a sanitizer

SHELL := /bin/bash
CC := mpicc
PKGS := hdf5-openmpi openblas check
SANITIZER ?=
# The kernels use AVX-512 when the compiler is allowed to; ARCH= gives a portable build.
# -fno-math-errno and the cheap vector cost model let the element-wise loops (the optimizers)
# vectorise; without -ffast-math no sum is reordered, so results are bit for bit the same.
ARCH ?= -march=native

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wstrict-prototypes \
          -fno-fast-math -fno-math-errno -fvect-cost-model=cheap $(ARCH) -I. $(PKG_CFLAGS)
LDLIBS = $(PKG_LIBS) -lz -lm

ifneq ($(SANITIZER),)
CFLAGS += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZER)
BUILD := build-$(SANITIZER)
else
BUILD := build
endif
BIN := $(BUILD)/bin

LIB_SRC := $(wildcard layers/*.c io/*.c comm/*.c trainer/*/*.c)
LIB_SRC := $(filter-out trainer/run/main.c,$(LIB_SRC))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB := $(BUILD)/libmemtrain.a

TEST_SRC := $(wildcard tests/check_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BIN)/%)
BENCH_SRC := $(wildcard tests/bench_*.c)
BENCH_BIN := $(BENCH_SRC:tests/%.c=$(BIN)/%)
TESTUTIL_OBJ := $(BUILD)/tests/testutil.o
MAIN := $(BIN)/memtrain
# The source's identity, compiled into memtrain so that ranks started from different builds
# are refused in one line rather than parting in their first collectives: the commit, a digest
# of the C sources and the Makefile where they differ from it (changed or new files), and the
# target ARCH ("unknown" outside a git clone).
SOURCE_ID := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(shell \
    git rev-parse --git-dir >/dev/null 2>&1 && git ls-files -m -o --exclude-standard -- \
    '*.c' '*.h' Makefile | sort | xargs -r cat | cksum | awk '$$2 > 0 { print "+" $$1 }') \
    $(ARCH)

# Debian packages the build, the tests, the data and the job scripts need (plus npm, for
# the Brown corpus, unless a Node.js installation already provides it).
DEB_PKGS := libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools libopenblas-dev \
            check pkg-config zlib1g-dev dataset-fashion-mnist python3-h5py \
            gnuplot-nox slurm-wlm munge iproute2 procps

.PHONY: all deps torch-deps test demo bench data clean
all: $(MAIN) $(TEST_BIN) $(BENCH_BIN)

# Installs only what is missing, never asks. A second run does nothing.
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi; \
	if ! command -v npm >/dev/null; then \
	  echo "installing: npm"; SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  [ -n "$$missing" ] || $$SUDO apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq npm >/dev/null; \
	fi

$(BUILD)/%.o: %.c $(wildcard */*.h */*/*.h) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SOURCE_DEF) -c -o $@ $<

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN)/%: $(BUILD)/tests/%.o $(TESTUTIL_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# rewritten only when the identity changes, so that main.o is rebuilt then and only then
$(BUILD)/source-id: FORCE
	@mkdir -p $(dir $@); echo '$(SOURCE_ID)' | cmp -s - $@ || echo '$(SOURCE_ID)' >$@
$(BUILD)/trainer/run/main.o: $(BUILD)/source-id
$(BUILD)/trainer/run/main.o: SOURCE_DEF = -DMEMTRAIN_SOURCE_ID='"$(SOURCE_ID)"'
.PHONY: FORCE
FORCE:

$(MAIN): $(BUILD)/trainer/run/main.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

data: deps
	@bash io/fetch-data.sh

# The kernels' portable paths (no AVX-512) are tested too, from a second build of the tests
# that exercise them.
PORTABLE := $(BUILD)-portable
PORTABLE_TESTS := check_ops check_hash

# PyTorch (Debian's python3-torch) is for tests/test_to_torch.sh (the converter's check) and
# the comparison benchmark: make test and make bench install it, make demo never needs it.
torch-deps: deps
	@dpkg-query -W -f='$${Status}\n' python3-torch 2>/dev/null | grep -q '^install ok installed' || { \
	  echo "installing: python3-torch"; SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends python3-torch >/dev/null; }

test: deps torch-deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory ARCH=-march=x86-64-v2 BUILD=$(PORTABLE) \
	    $(PORTABLE_TESTS:%=$(PORTABLE)/bin/%)
	@$(MAKE) --no-print-directory data
	@BUILD=$(BUILD) PORTABLE_BUILD=$(PORTABLE) bash tests/run-tests.sh

bench: deps torch-deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bash tests/run-bench.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory data
	@BUILD=$(BUILD) bash jobs/demo.sh

clean:
	rm -rf build build-address build-undefined build-portable build-address-portable \
	       build-undefined-portable
