# The two commands of the README: `make demo` (the main job) and `make test`.
# Each builds the environment in .venv first (scripts/setup.sh; a no-op once done).
PY := .venv/bin/python

.PHONY: setup demo test notebooks bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m l2s_kit.cli study --png

test: setup
	$(PY) -m ruff check l2s_kit tests benchmarks notebooks
	$(PY) -m pytest -q

notebooks: setup
	$(PY) -m l2s_kit.cli notebooks run --run latest --overwrite

bench: setup
	$(PY) benchmarks/merge_speed.py

clean:
	rm -rf data/runs/study figures/study
