# nichefeed: the two commands are `make serve` and `make test`; both install what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# One stamp per install set, so each target installs only what it runs (see "Installs" below).
STAMP_SERVE := $(VENV)/.deps-serve
STAMP_SPARK := $(VENV)/.deps-spark
STAMP_DEV := $(VENV)/.deps-dev
GEN := gen/nichefeed/v1/ranking_pb2.py
PROMTOOL := var/tools/promtool
DATA ?= data/default
MODELS ?= models
ARGS ?=
# Training engine: implicit (this machine) or spark (Apache Spark, local[2] here; docs/training.md).
ENGINE ?= implicit
export NICHEFEED_MODELS_DIR ?= $(MODELS)

.PHONY: help install install-dev install-spark install-redis install-java bench-training proto data train model evaluate ranker-check compare publish rollback fold-log convert serve test format bench bench-quick clean experiment experiment-stop experiment-promote experiment-report

help:
	@echo "make serve      install, build, create the default world and model, start Redis, serve gRPC on 127.0.0.1:50051"
	@echo "make test       install and run the test suite (real redis-server, real gRPC)"
	@echo "make data       generate the synthetic default world into $(DATA)"
	@echo "make train      train a model bundle from DATA=$(DATA) into $(MODELS)/ (ENGINE=spark: on Apache Spark)"
	@echo "make evaluate   recompute the newest bundle's evaluation report and check it matches"
	@echo "make compare A=<bundle> B=<bundle>   paired NDCG@10 of two bundles of the same data (B minus A)"
	@echo "make ranker-check would a lambdarank ranker or EASE's score rank the newest bundle's candidates better?"
	@echo "make publish    gate, load the newest bundle's features into Redis, make it current (ARGS=--force)"
	@echo "make rollback   make the previously published version current again"
	@echo "make experiment START=<version> SHARE=10   serve a second published version to SHARE% of users"
	@echo "                (SHADOW=0.05 SALT=... GRACE=10); without START: show the running experiment"
	@echo "make experiment-stop / experiment-promote   end it: everyone back on control / the candidate current"
	@echo "make experiment-report   per-variant engagement rates, intervals and a verdict (markdown + plot)"
	@echo "make fold-log   fold the service's live event log (new posts, engagements) into DATA"
	@echo "make convert    a public log into the input schema: FORMAT=movielens|lastfm|stackexchange|stackexchange-sites|reddit-threads|mailing-lists|discourse SRC=dir OUT=dir"
	@echo "                (mailing-lists: ARGS=\"--since 2024-01-19 --until 2026-01-19\")"
	@echo "make bench      benchmarks (see benchmarks/README.md)"
	@echo "make bench-training   training time of both engines and their parity (ARGS=\"--world 10m\": the 10M-event log)"
	@echo "make install    what make serve needs (serving, [train], [proto]: no pyspark, no Java); install-spark, install-dev add the rest"
	@echo "make proto      regenerate the gRPC stubs into gen/"
	@echo "make format     apply the linter's fixes and the formatter (make test checks both)"
	@echo "make clean      remove the virtualenv, generated stubs, the compiled trees' kernel, var/ (Redis data)"

# Installs. The project goes into a project virtualenv, editable so the tree is what runs;
# gen/ must exist first (the generated stubs are the package nichefeed.v1). Three sets,
# each a stamp, each a superset of the one before:
#   serve  [train,proto]: serving, plus what `make serve` runs before serving (generate the
#          default world, train it: [train]) and the stub generator ([proto]). Never
#          pyspark, never Java: serving does not need them (tests/test_layout.py).
#   spark  + [spark]: make train ENGINE=spark (pyspark; Java comes from install-java).
#   dev    [dev] = all of it plus the test tools: make test, the benchmarks.
# A larger set's recipe also stamps the smaller ones, so `make serve` after `make test`
# installs nothing, and `make test` after `make serve` adds only what serving lacked.
SERVE_EXTRAS := train,proto
SPARK_EXTRAS := train,proto,spark
# --no-cache-dir: pip's wheel cache would keep a second copy of pyspark and the rest (about
# 440 MB) that a fresh clone never reuses, on CI machines that can be short of disk.
define pip-install
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@mkdir -p gen/nichefeed/v1 && touch gen/nichefeed/__init__.py gen/nichefeed/v1/__init__.py
	@rm -f $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nichefeed.pth
	$(PY) -m pip install --disable-pip-version-check --no-cache-dir -q -e '.[$(1)]'
endef

# The editable install also compiles core/quickscorer.c (the trees' kernel) in place: an
# edit to it re-runs the install.
BUILT_FROM := pyproject.toml core/quickscorer.c

$(STAMP_SERVE): $(BUILT_FROM)
	$(call pip-install,$(SERVE_EXTRAS))
	@touch $@

$(STAMP_SPARK): $(BUILT_FROM)
	$(call pip-install,$(SPARK_EXTRAS))
	@touch $@ $(STAMP_SERVE)

$(STAMP_DEV): $(BUILT_FROM)
	$(call pip-install,dev)
	@touch $@ $(STAMP_SPARK) $(STAMP_SERVE)

# What make serve and the training targets need: serving and training deps, the stubs, Redis.
install: $(STAMP_SERVE) $(GEN) install-redis

# The Spark engine on top: pyspark and a JRE.
install-spark: install $(STAMP_SPARK) install-java

# Everything make test and the benchmarks use: [dev], a JRE, promtool.
# ([dev] first: its recipe stamps the smaller sets, so a fresh clone runs pip once.)
install-dev: $(STAMP_DEV) install install-java $(PROMTOOL)

# Debian's redis-server when none is on PATH (tests and the private server need the binary).
install-redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }
	@command -v redis-server >/dev/null

# Debian's JRE when no java is on PATH: the Spark engine (make train ENGINE=spark, its
# tests) runs Spark's JVM. Serving never needs it, so `make serve` does not install it.
install-java:
	@command -v java >/dev/null 2>&1 || { \
	  echo "installing a Java runtime (Debian package default-jre-headless)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq default-jre-headless >/dev/null; }
	@command -v java >/dev/null

# promtool (Prometheus' checker for rules and scrapes) for the ops tests: taken out of
# Debian's prometheus package without installing it (no server, no service started); only
# that one file is unpacked, since CI machines can be short of disk.
$(PROMTOOL):
	@mkdir -p var/tools/deb
	@cd var/tools/deb && { apt-get download prometheus >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && apt-get download prometheus >/dev/null; }; }
	@dpkg-deb --fsys-tarfile var/tools/deb/prometheus_*.deb | tar -xO ./usr/bin/promtool > $@.part
	@chmod +x $@.part && mv $@.part $@
	@rm -rf var/tools/deb
	@$@ --version | head -1

# Stubs are generated, never edited, and not checked in.
PROTOS := $(wildcard protos/nichefeed/v1/*.proto)
$(GEN): $(PROTOS) $(STAMP_SERVE)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=gen --grpc_python_out=gen --pyi_out=gen $(PROTOS)

proto: $(STAMP_SERVE)
	@rm -f $(GEN)
	@$(MAKE) --no-print-directory $(GEN)

data: install
	$(PY) -m training generate --out $(DATA) $(ARGS)

train: install $(if $(filter spark,$(ENGINE)),install-spark)
	$(PY) -m training train --data $(DATA) --models $(MODELS) --engine $(ENGINE) $(ARGS)

# Recompute the newest bundle's report from the bundle and its data; fails on any mismatch.
# A Spark bundle is refitted on Spark: make evaluate ENGINE=spark installs pyspark and Java.
evaluate: install $(if $(filter spark,$(ENGINE)),install-spark)
	$(PY) -m training evaluate --models $(MODELS) $(ARGS)

# Would a gradient-boosted ranker (LightGBM lambdarank) or EASE's score rank the pipeline's
# candidates better? Leave-one-point-out on the bundle's own evaluation (docs/training.md).
ranker-check: install $(if $(filter spark,$(ENGINE)),install-spark)
	$(PY) -m training ranker-check --models $(MODELS) $(ARGS)

# Did a change help? Two bundles of the same data, paired: make compare A=models/<old> B=models/<new>
compare: install
	@test -n "$(A)" -a -n "$(B)" || { echo "usage: make compare A=<bundle dir> B=<bundle dir> [ARGS=--method ...]"; exit 2; }
	$(PY) -m training compare $(A) $(B) $(ARGS)

publish: install
	$(PY) -m training publish --models $(MODELS) $(ARGS)

fold-log: install
	$(PY) -m training fold-log --data $(DATA) $(ARGS)

rollback: install
	$(PY) -m training rollback --models $(MODELS) $(ARGS)

# Experiments (README "Experiments"): a second published version beside the current one.
SHARE ?= 10
SHADOW ?= 0
GRACE ?= 10
experiment: install
ifdef START
	$(PY) -m training experiment start $(START) --models $(MODELS) --share $(SHARE) --shadow $(SHADOW) --grace $(GRACE) $(if $(SALT),--salt $(SALT)) $(ARGS)
else
	$(PY) -m training experiment status $(ARGS)
endif

experiment-stop: install
	$(PY) -m training experiment stop $(ARGS)

experiment-promote: install
	$(PY) -m training experiment promote --models $(MODELS) $(ARGS)

experiment-report: install
	$(PY) -m training experiment-report $(ARGS)

# A public log (MovieLens, Last.fm, Stack Exchange, Reddit threads) in its original files -> events.csv,
# posts.csv, communities.csv in OUT (docs/training.md "Real logs: converters").
convert: install
	@test -n "$(FORMAT)" -a -n "$(SRC)" -a -n "$(OUT)" || { echo "usage: make convert FORMAT=movielens SRC=path OUT=data/ml100k"; exit 2; }
	$(PY) -m training convert $(FORMAT) $(SRC) $(OUT) $(ARGS)

serve: install
	$(PY) -m training ensure --data $(DATA) --models $(MODELS)
	exec $(PY) -m service $(ARGS)

# The linter and the format check first: a tree that does not pass them does not pass.
test: install-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest $(ARGS)

# Fix what the linter can fix and format the tree.
format: install-dev
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: install-dev
	$(PY) -m benchmarks.run $(ARGS)

bench-quick: install-dev
	$(PY) -m benchmarks.run --quick $(ARGS)

# Training time of the implicit and the Spark engine, and the parity of their reports
# (benchmarks/training.py); not part of make bench.
bench-training: install-dev
	$(PY) -m benchmarks.training $(ARGS)

clean:
	rm -rf $(VENV) gen var .pytest_cache core/_quickscorer*.so
