# The README's commands are the contract: `make demo` and `make test` set everything up.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Upstream launch, launch_ros, launch_testing and ros2cli as wheels (not on PyPI; every ROS 2
# install has them): installed beside the Kilted wheels when the folder is there, so `make test`
# runs under launch_testing's pytest plugin as on a ROS 2 install. Without it, as before.
ROS_UPSTREAM ?= ../shared/wheels/ros-upstream
UPSTREAM_WHEELS := $(sort $(wildcard $(ROS_UPSTREAM)/*.whl))
STAMP := $(VENV)/.installed-$(shell (cat requirements.txt requirements-upstream.txt; \
  echo $(notdir $(UPSTREAM_WHEELS))) | sha1sum | cut -c1-12)
ENV := source scripts/env.sh
COLCON_DIRS := --build-base build --install-base install

.PHONY: venv build test test-full demo bench results clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-upstream.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
ifneq ($(UPSTREAM_WHEELS),)
	$(PY) -m pip install -q -r requirements-upstream.txt
	$(PY) -m pip install -q --no-deps $(UPSTREAM_WHEELS)
endif
	@touch $(VENV)/COLCON_IGNORE
	@rm -f $(VENV)/.installed-* && touch $@

# The train extra (a CPU PyTorch wheel; setuptools<80, which colcon-core needs) for `make
# test-full`, which CI runs: the ESPNet export and training tests then run instead of skipping.
TORCH_STAMP := $(VENV)/.torch-2.13.0
$(TORCH_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-warn-conflicts 'torch==2.13.0' 'setuptools<80'
	@touch $@

build: $(STAMP)
	$(ENV) && colcon --log-base log build --base-paths . $(COLCON_DIRS) --event-handlers console_cohesion-

# Fails, too, when fewer tests ran than test/min_tests_run.txt; lists every skip with its reason.
RESULTS := build/metafusion_ros/pytest.xml
test: build
	rm -f $(RESULTS)
	$(ENV) && colcon --log-base log test --base-paths . $(COLCON_DIRS) \
	  --event-handlers console_direct+ --return-code-on-test-failure \
	  --pytest-args -p no:cacheprovider -rs; rc=$$?; \
	  colcon test-result --test-result-base build --verbose; \
	  python scripts/test_floor.py $(RESULTS) test/min_tests_run.txt || rc=1; exit $$rc

# `make test` with the train extra installed first (CI: .ci/run); `make test` never installs it.
test-full: $(TORCH_STAMP)
	$(MAKE) test

demo: build
	$(ENV) && source install/setup.bash && python -m metafusion_ros.tools.demo

bench: build
	$(ENV) && source install/setup.bash && for b in benchmarks/bench_*.py; do OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python $$b || exit 1; done

# Every prior, meta model, chain manifest, table and figure of docs/results from the repo and
# ../shared (24 min on the 2-core VM).
results: build
	$(ENV) && source install/setup.bash && bash scripts/results.sh

clean:
	rm -rf build install log
