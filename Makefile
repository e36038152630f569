# bge-reranker-v2-m3 on Triton. `make help` lists the targets.
SHELL := /bin/bash
PYTHON_BIN ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

MODEL ?= BAAI/bge-reranker-v2-m3
REPO ?= runs/model_repository
BACKEND ?= onnxruntime
PRECISION ?= fp16
MAX_LENGTH ?= 512
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
# Loopback unless asked otherwise (HOST=0.0.0.0 to serve other machines).
HOST ?= 127.0.0.1
TEST_MODEL := runs/test-model
# A small stand-in trained here (common/trained_standin.py): the one int8 passes the gate on.
TRAINED_MODEL := runs/trained-model
URL ?=
REPORT ?= runs/verify/report.json
DATA ?=
CANDIDATES ?=
EVAL_OUT ?=
TRITON_URL ?= 127.0.0.1:8001
REST_HOST ?= 127.0.0.1
REST_PORT ?= 8080

# Variables a caller sets reach shell recipes only as environment variables, quoted ("$${X}"),
# never pasted into the command line, and `check-vars` refuses malformed values first: a
# MAX_LENGTH="512; rm -rf x" is refused, not run. `$(value ...)` takes the text as typed, so a
# value holding $(shell ...) is not expanded by make either.
USER_VARS := MODEL REPO BACKEND PRECISION MAX_LENGTH HTTP_PORT GRPC_PORT METRICS_PORT HOST URL REPORT DATA CANDIDATES EVAL_OUT \
             TRITON_URL REST_HOST REST_PORT
$(foreach v,$(USER_VARS),$(eval override $(v) := $$(value $(v))))
export $(USER_VARS)

.PHONY: check-vars help setup validate-deploy test test-slow export serve demo demo-offline standin-trained configs verify perf bench bench-100 bench-long eval rest rest-bench clean

help:
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

$(STAMP): requirements/dev.txt client/pyproject.toml rest/pyproject.toml
	@command -v dpkg >/dev/null && ! dpkg -s libb64-0d >/dev/null 2>&1 && \
	  { apt-get update -qq && apt-get install -y -qq libb64-0d >/dev/null; } || true
	@# nginx (Debian 1.22): the front proxy the trust-boundary tests run for real.
	@command -v dpkg >/dev/null && ! command -v nginx >/dev/null && ! test -x /usr/sbin/nginx && \
	  { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; } || true
	test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==24.3.1
	$(PY) -m pip install -q -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps -e ./client
	$(PY) -m pip install -q --no-deps -e ./rest
	touch $(STAMP)

check-vars:
	@bad=0; \
	[[ "$${MAX_LENGTH}" =~ ^[0-9]{1,5}$$ ]] || { echo "MAX_LENGTH must be a number, got: $${MAX_LENGTH}" >&2; bad=1; }; \
	for port in HTTP_PORT GRPC_PORT METRICS_PORT REST_PORT; do \
	  [[ "$${!port}" =~ ^[0-9]{1,5}$$ ]] || { echo "$$port must be a port number, got: $${!port}" >&2; bad=1; }; \
	done; \
	for host in HOST REST_HOST; do \
	  [[ "$${!host}" =~ ^[A-Za-z0-9.:-]+$$ ]] || { echo "$$host must be an address or host name, got: $${!host}" >&2; bad=1; }; \
	done; \
	[[ "$${BACKEND}" =~ ^(onnxruntime|tensorrt|python)$$ ]] || { echo "BACKEND must be onnxruntime, tensorrt or python, got: $${BACKEND}" >&2; bad=1; }; \
	[[ "$${PRECISION}" =~ ^(fp16|fp32|int8)$$ ]] || { echo "PRECISION must be fp16, fp32 or int8, got: $${PRECISION}" >&2; bad=1; }; \
	for path in MODEL REPO REPORT URL DATA CANDIDATES EVAL_OUT TRITON_URL; do \
	  [[ "$${!path}" =~ ^[A-Za-z0-9_./:@~+-]*$$ ]] || { echo "$$path holds characters outside [A-Za-z0-9_./:@~+-]: $${!path}" >&2; bad=1; }; \
	done; \
	exit $$bad

DEPLOY_STAMP := .venv-deploy/.installed
$(DEPLOY_STAMP): requirements/deploy.txt
	test -x .venv-deploy/bin/python || $(PYTHON_BIN) -m venv .venv-deploy
	.venv-deploy/bin/python -m pip install -q -r requirements/deploy.txt
	touch $(DEPLOY_STAMP)

setup: $(STAMP) $(DEPLOY_STAMP) ## create .venv (+ .venv-deploy for the offline validators), all pinned; idempotent

validate-deploy: setup ## hadolint, compose-spec, helm render+lint, kubernetes-validate, checkov, yamllint
	.venv-deploy/bin/python deploy/validate.py runs/rendered

# The tests run without the variables exported above: a test that starts a script or `make`
# must see its own defaults, not this invocation's MAX_LENGTH or MODEL.
CLEAN_ENV := env $(foreach v,$(USER_VARS),-u $(v))

test: setup ## the offline test suite, against a real local tritonserver
	$(CLEAN_ENV) $(PY) -m pytest -q --durations=25 tests

test-slow: setup ## real-shape export (24 x 1024, 250k vocab), soak and overload runs
	$(CLEAN_ENV) $(PY) -m pytest -q -m slow tests --run-slow

export: check-vars setup ## MODEL=<hub id|dir> REPO=<dir> BACKEND=onnxruntime|tensorrt|python PRECISION=fp16|fp32|int8 MAX_LENGTH=512
	$(PY) -m export --model "$${MODEL}" --repo "$${REPO}" --backend "$${BACKEND}" \
	  --precision "$${PRECISION}" --max-length "$${MAX_LENGTH}"

serve: check-vars setup ## REPO=<dir>: the real tritonserver (CPU) on HOST (127.0.0.1) and HTTP_PORT/GRPC_PORT/METRICS_PORT
	$(PY) -m local_triton.server "$${REPO}" --host "$${HOST}" --http-port "$${HTTP_PORT}" \
	  --grpc-port "$${GRPC_PORT}" --metrics-port "$${METRICS_PORT}"

rest: check-vars setup ## TRITON_URL=<host:grpc_port> REST_PORT=8080: the REST API (Cohere/Jina /v1/rerank, TEI /rerank) in the foreground
	$(PY) -m reranker_rest --triton-url "$${TRITON_URL}" --host "$${REST_HOST}" --port "$${REST_PORT}"

rest-bench: setup ## added latency/throughput of the REST API vs the client, at concurrency 1 and 8 (starts its own servers)
	$(PY) -m benchmarks.rest_overhead

$(TEST_MODEL)/model.safetensors: | setup
	$(PY) -m common.standin_model $(TEST_MODEL)

demo: check-vars setup ## export MODEL (python backend, fp32) -> serve on HOST (127.0.0.1) -> rerank a multilingual sample
	$(PY) -m local_triton.demo --model "$${MODEL}" --repo runs/demo_repository --host "$${HOST}" \
	  --http-port "$${HTTP_PORT}" --grpc-port "$${GRPC_PORT}" --metrics-port "$${METRICS_PORT}"

$(TRAINED_MODEL)/model.safetensors: common/trained_standin.py | setup
	$(PY) -m common.trained_standin $(TRAINED_MODEL)

standin-trained: $(TRAINED_MODEL)/model.safetensors ## a small stand-in trained here (minutes, seeded) -> runs/trained-model (MODEL= for int8)

demo-offline: $(TEST_MODEL)/model.safetensors ## the demo on a random-weight stand-in (no Hub needed)
	$(MAKE) demo MODEL="$(TEST_MODEL)"

verify: check-vars setup ## URL=<host:grpc_port> REPO=<exported repository>: certify the live server against REPO/certificate.json
	@test -n "$${URL}" || { echo "usage: make verify URL=<host:grpc_port> REPO=<repository dir>"; exit 2; }
	$(PY) -m reranker_client.verify --url "$${URL}" --repo "$${REPO}" --report "$${REPORT}" $(VERIFY_ARGS)

perf: check-vars setup ## REPO=<dir> (served locally) or URL=<host:port>: perf_analyzer sweep -> CSV, markdown, PNG
	$(PY) -m loadtest.perf_analyzer $(if $(URL),--url "$${URL}" --tokenizer "$${REPO}/tokenizer/1/tokenizer.json",--repo "$${REPO}") \
	  --out runs/perf

eval: check-vars $(STAMP) ## URL=<host:grpc_port> DATA=<BEIR dataset dir> [CANDIDATES=<TREC run>]: nDCG/MRR/Recall before and after reranking
	@test -n "$${URL}" -a -n "$${DATA}" || { echo "usage: make eval URL=<host:grpc_port> DATA=<dataset dir> [CANDIDATES=<run file>] [EVAL_ARGS=...]"; exit 2; }
	$(PY) -m evaluation --url "$${URL}" --data "$${DATA}" $(if $(CANDIDATES),--candidates "$${CANDIDATES}") \
	  $(if $(EVAL_OUT),--out "$${EVAL_OUT}") $(EVAL_ARGS)

INFINITY_VENV := runs/venv-infinity
$(INFINITY_VENV)/.installed: requirements/infinity.txt
	@# Infinity pins clash with ours: its own venv; a failure is reported by the benchmark, not fatal.
	test -x $(INFINITY_VENV)/bin/python || $(PYTHON_BIN) -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/python -m pip install -q -r requirements/infinity.txt && touch $@ || true

bench: setup $(INFINITY_VENV)/.installed ## same inputs, interleaved trials, paired ratios: ours vs ONNX Runtime, CrossEncoder, FlagReranker, Infinity; serving overhead; cost of a run (docs/PERFORMANCE.md)
	$(PY) -m benchmarks.run_cost --out benchmarks/results
	$(PY) -m benchmarks.serving_overhead --shape tiny --trials 200 --requests 4 --out benchmarks/results
	$(PY) -m benchmarks.overhead_attribution --shape tiny --rounds 60 --out benchmarks/results
	$(PY) -m benchmarks.overhead_by_request_size --shape tiny --trials 150 --out benchmarks/results
	$(PY) -m benchmarks.serving_overhead --shape bench --requests 3 --trials 6 --no-router --breakdown-rounds 2 --out benchmarks/results
	$(PY) -m benchmarks.bench --shape tiny --out benchmarks/results
	$(PY) -m benchmarks.bench --shape bench --out benchmarks/results
	$(PY) -m benchmarks.long_documents --shape tiny --out benchmarks/results

bench-100: setup $(INFINITY_VENV)/.installed ## the side-by-side with 100-passage requests (hours on 2 cores); writes runs/bench-100/
	$(PY) -m benchmarks.bench --shape bench --passages 100 --out runs/bench-100

bench-long: setup ## long documents: window mode at max_length 512 vs one pass at 8192 (100 passages, 1,000-6,000 tokens)
	$(PY) -m benchmarks.long_documents --shape tiny --out benchmarks/results

configs: setup ## regenerate the committed model_repository/ configs (and the 8,192 golden set) from export/triton_config.py
	$(PY) -m export.triton_config model_repository tests/golden/long_context

clean:
	rm -rf runs .cache
