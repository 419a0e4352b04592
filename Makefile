# The two entry points of the README. Both set up .venv first (idempotent: seconds once done).
PY := .venv/bin/python

.PHONY: setup demo test
setup:
	@bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py

test: setup
	$(PY) -m pytest -q tests
