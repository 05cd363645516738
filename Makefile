# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PERSONS ?= 20000

.PHONY: demo test bench lint clean browser

$(VENV)/.installed: pyproject.toml constraints.txt privacy/audit/_sha256many.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	rm -f privacy/audit/_sha256many*.so  # an optional build that fails must not leave an old one
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/signals demo --persons $(PERSONS) --out demo-output

# The report test renders the HTML in headless Chromium from Debian's packages; as root (CI)
# it is installed here, otherwise that test is skipped and says why.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium fonts-dejavu-core >/dev/null; \
	fi

test: $(VENV)/.installed browser
	$(PY) -m pytest -n 2 -q

# docs/scaling.md: per stage, against a DuckDB floor; e.g. `make bench BENCH_PERSONS=3000000`.
# Three turns a size, the middle one reported: one turn can fall on a busy moment.
BENCH_PERSONS ?= 100000,1000000
BENCH_REPEAT ?= 3
bench: $(VENV)/.installed
	$(VENV)/bin/signals bench --persons $(BENCH_PERSONS) --repeat $(BENCH_REPEAT)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) demo-output .pytest_cache build
	rm -f privacy/audit/_sha256many*.so
