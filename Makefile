# The two commands of the README: `make demo` (main job end to end) and `make test`.
# Both create .venv and install Custos into it on first use; Kafka's jars come from Maven
# Central the first time a broker starts (cached in ~/.custos/kafka/libs).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/custos demo

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests
	$(BIN)/mypy pipeline

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python tests/bench/bench_decode.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
