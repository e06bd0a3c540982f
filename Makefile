# mdx: the two commands a user types are `make demo` and `make test`; both install what is
# missing (Debian 12 packages) and build first.
BUILD   ?= build
PREFIX  ?= /usr/local
JOBS    ?= $(shell nproc)
PYTHON  ?= /usr/bin/python3
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

# Build and run dependencies (SPEC.md "Dependencies"), plus the Python used by tests and benches.
DEB_PACKAGES = g++ make cmake pkg-config zlib1g-dev libssl-dev \
  libtorch-dev libopenblas0-pthread libgloo-dev libhdf5-dev libopencv-dev libpng-dev \
  libcli11-dev libfmt-dev libssl-dev doctest-dev dataset-fashion-mnist hdf5-tools groff-base \
  python3-h5py python3-numpy python3-scipy python3-sklearn python3-pil python3-torch \
  python3-matplotlib

.PHONY: all deps build test demo bench install clean

all: build

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "make deps: need root or sudo to install:$$missing" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo: build
	MDX_BIN=$(CURDIR)/$(BUILD) share/mdx/recipes/fashion-mnist.sh --demo --dir demo

bench: build
	MDX_BIN=$(CURDIR)/$(BUILD) PYTHON=$(PYTHON) bench/run.sh

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD)
