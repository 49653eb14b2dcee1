# iommusim developer targets. CI runs `make test` and `make lint` on a fresh clone; neither needs
# anything beside the repository.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed.stamp
SHARED ?= ../shared
# The public conformance vectors, carried in the repository.
VECTORS ?= tests/conformance/vectors/riscv-iommu
# How the conformance vectors are replayed; override on the command line to change it.
VECTORS_CHECK ?= $(BIN)/iommusim vectors check $(VECTORS)
# The official checker in ../shared (optional: `make official-check` when that tree is present),
# driving `iommusim vectors fill` over the whole directory in one process.
OFFICIAL_CHECK ?= $(BIN)/python $(SHARED)/conformance/riscv-iommu/check.py --batch \
	--vectors $(SHARED)/conformance/riscv-iommu/vectors --fill '$(CURDIR)/$(BIN)/iommusim vectors fill {in} -o {out}'

.PHONY: venv test pytest vectors official-check fuzz demo bench lint format clean selftest-iommufd

venv: $(STAMP)

# Reinstall only when the project metadata changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Unit tests first, then the conformance vectors (sequential even under make -j).
test: $(STAMP)
	$(BIN)/pytest -q
	$(VECTORS_CHECK)

pytest: $(STAMP)
	$(BIN)/pytest -q

vectors: $(STAMP)
	$(VECTORS_CHECK)

official-check: $(STAMP)
	@test -f $(SHARED)/conformance/riscv-iommu/check.py || \
		{ echo "official-check: $(SHARED)/conformance/riscv-iommu/check.py not found" >&2; exit 2; }
	$(OFFICIAL_CHECK)

# Both fuzzers side by side, each for SECONDS: the vector-mutation fuzzer against the hardware
# model and the state machine against the software API. A finding prints its reproducer (seed)
# and fails the target. `make test` runs both briefly with fixed seeds.
SECONDS ?= 60
SEED ?= $(shell date +%s)
FUZZ := PYTHONPATH=tests $(BIN)/python -m
fuzz: $(STAMP)
	@echo "fuzz: $(SECONDS) s per side, seed $(SEED)"
	@$(FUZZ) testsupport.hwfuzz --seconds $(SECONDS) --seed $(SEED) & hw=$$!; \
	$(FUZZ) testsupport.swfuzz --seconds $(SECONDS) --seed $(SEED); sw=$$?; \
	wait $$hw; hwrc=$$?; test $$sw -eq 0 && test $$hwrc -eq 0

# The kernel's own iommufd selftest (Linux 7.3, from Debian's linux-source-7.3) against the
# model's /dev/iommu; downloads the package with a private apt configuration under
# SELFTEST_BUILD (DEB=path/to/linux-source-7.3_*.deb uses one already downloaded). Not part of
# `make test`, which keeps a fast in-repo check of the transport (tests/hostproc).
SELFTEST_BUILD ?= build/selftest-iommufd
DEB ?=
selftest-iommufd: $(STAMP)
	sh tools/selftest-iommufd.sh $(SELFTEST_BUILD) '$(CURDIR)/$(BIN)/iommusim' $(DEB)

demo: $(STAMP)
	$(BIN)/iommusim demo

# The scalar model's translation figures, then the batch engine's on the same workloads.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_translate.py
	$(BIN)/python benchmarks/bench_smmuv3.py
	$(BIN)/python benchmarks/bench_engine.py
	$(BIN)/python benchmarks/bench_dma.py
	$(BIN)/python benchmarks/bench_sva.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict src

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
