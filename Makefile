.PHONY: setup demo test

setup:
	bash scripts/setup.sh

# Prepares the demo data, extracts with the offline Whisper base, evaluates, prints the table.
demo: setup
	.venv/bin/calm demo

# The whole suite, the end-to-end test on the real offline Whisper included.
test: setup
	.venv/bin/python -m pytest -q
