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

.PHONY: install demo test lint bench info clean

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

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check glad cli tests benchmarks

info: install
	$(VENV)/bin/glad info

bench: install
	$(VENV)/bin/glad bench ops

clean:
	rm -rf build $(VENV) *.egg-info glad/_C*.so
