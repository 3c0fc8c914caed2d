# Everything sets itself up from nothing: `make demo` and `make test` on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.stamp-install
NATIVE := $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*.cu csrc/cuda/*.cuh)
# The CUDA kernels take minutes to compile: only where a GPU is visible, or when asked for
# (GLAD_BUILD_CUDA=1 make install; CI does this to check that they compile).
GLAD_BUILD_CUDA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
export GLAD_BUILD_CUDA

.PHONY: install demo test test-slow check-native lint bench info clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# The extension is compiled against the installed torch, hence --no-build-isolation
# (an isolated build would fetch another torch into a throwaway environment).
$(STAMP): pyproject.toml setup.py constraints.txt $(NATIVE) | $(PY)
	$(PIP) install --quiet -c constraints.txt "setuptools>=69" wheel ninja pybind11 torch torchvision
	@# setuptools' notice about editable installs reads like an error; it is not one
	PYTHONWARNINGS="ignore:Editable installation" $(PIP) install --quiet -c constraints.txt --no-build-isolation -e ".[dev]"
	@touch $(STAMP)

demo: install
	$(VENV)/bin/glad train

# The native backends the install was asked to build must be there: a failed build is an
# error here, not a quiet skip of the native tests (GLAD_BUILD_EXT=0 asks for none).
check-native: install
	@GLAD_BUILD_EXT=$${GLAD_BUILD_EXT:-auto} $(PY) -m glad.ops.check_native

# The fast suite (a few minutes on 2 cores); `make test-slow` runs the long end-to-end
# tests, and CI runs both.
test: check-native
	$(PY) -m pytest -q -m "not slow"

test-slow: check-native
	$(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check glad cli tests benchmarks

info: install
	$(VENV)/bin/glad info

bench: install
	$(VENV)/bin/glad bench ops

clean:
	rm -rf build $(VENV) *.egg-info glad/_C*.so
