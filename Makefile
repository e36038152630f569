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
TEST_MODEL := runs/test-model

.PHONY: help setup validate-deploy test test-slow export serve rest rest-bench demo demo-offline configs verify perf bench clean

help:
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

$(STAMP): requirements/dev.txt client/pyproject.toml rest/pyproject.toml
	@command -v dpkg >/dev/null && ! dpkg -s libb64-0d >/dev/null 2>&1 && \
	  { apt-get update -qq && apt-get install -y -qq libb64-0d >/dev/null; } || true
	test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==24.3.1
	$(PY) -m pip install -q -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps -e ./client
	$(PY) -m pip install -q --no-deps -e ./rest
	touch $(STAMP)

DEPLOY_STAMP := .venv-deploy/.installed
$(DEPLOY_STAMP): requirements/deploy.txt
	test -x .venv-deploy/bin/python || $(PYTHON_BIN) -m venv .venv-deploy
	.venv-deploy/bin/python -m pip install -q -r requirements/deploy.txt
	touch $(DEPLOY_STAMP)

setup: $(STAMP) $(DEPLOY_STAMP) ## create .venv (+ .venv-deploy for the offline validators), all pinned; idempotent

validate-deploy: setup ## hadolint, compose-spec, helm render+lint, kubernetes-validate, checkov, yamllint
	.venv-deploy/bin/python deploy/validate.py runs/rendered

test: setup ## the offline test suite, against a real local tritonserver
	$(PY) -m pytest -q tests

test-slow: setup ## real-shape export (24 x 1024, 250k vocab), soak and overload runs
	$(PY) -m pytest -q -m slow tests --run-slow

export: setup ## MODEL=<hub id|dir> REPO=<dir> BACKEND=onnxruntime|tensorrt|python PRECISION=fp16|fp32 MAX_LENGTH=512
	$(PY) -m export --model "$(MODEL)" --repo "$(REPO)" --backend $(BACKEND) \
	  --precision $(PRECISION) --max-length $(MAX_LENGTH)

serve: setup ## REPO=<dir>: the real tritonserver (CPU) on HTTP_PORT/GRPC_PORT/METRICS_PORT
	$(PY) -m local_triton.server "$(REPO)" --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) \
	  --metrics-port $(METRICS_PORT)

TRITON_URL ?= localhost:$(GRPC_PORT)
REST_HOST ?= 127.0.0.1
REST_PORT ?= 8080
rest: setup ## TRITON_URL=<host:grpc_port> REST_PORT=8080: the REST API (Cohere/Jina /v1/rerank, TEI /rerank) in the foreground
	$(PY) -m reranker_rest --triton-url "$(TRITON_URL)" --host $(REST_HOST) --port $(REST_PORT)

rest-bench: setup ## added latency/throughput of the REST API vs the client, at concurrency 1 and 8 (starts its own servers)
	$(PY) -m benchmarks.rest_overhead

$(TEST_MODEL)/model.safetensors: | setup
	$(PY) -m tests.model_factory $(TEST_MODEL)

demo: setup ## export MODEL (python backend, fp32) -> serve -> rerank a multilingual sample
	$(PY) -m local_triton.demo --model "$(MODEL)" --repo runs/demo_repository \
	  --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

demo-offline: $(TEST_MODEL)/model.safetensors ## the demo on a random-weight stand-in (no Hub needed)
	$(MAKE) demo MODEL=$(TEST_MODEL)

URL ?=
REPORT ?= runs/verify/report.json
verify: setup ## URL=<host:grpc_port> REPO=<exported repository>: certify the live server against REPO/certificate.json
	@test -n "$(URL)" || { echo "usage: make verify URL=<host:grpc_port> REPO=<repository dir>"; exit 2; }
	$(PY) -m reranker_client.verify --url "$(URL)" --repo "$(REPO)" --report "$(REPORT)" $(VERIFY_ARGS)

perf: setup ## REPO=<dir> (served locally) or URL=<host:port>: perf_analyzer sweep -> CSV, markdown, PNG
	$(PY) -m loadtest.perf_analyzer $(if $(URL),--url $(URL) --tokenizer "$(REPO)/tokenizer/1/tokenizer.json",--repo "$(REPO)") \
	  --out runs/perf

INFINITY_VENV := runs/venv-infinity
$(INFINITY_VENV)/.installed: requirements/infinity.txt
	@# Infinity pins clash with ours: its own venv; a failure is reported by the benchmark, not fatal.
	test -x $(INFINITY_VENV)/bin/python || $(PYTHON_BIN) -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/python -m pip install -q -r requirements/infinity.txt && touch $@ || true

bench: setup $(INFINITY_VENV)/.installed ## side-by-side benchmark (ours vs ONNX Runtime, CrossEncoder, FlagReranker, Infinity)
	$(PY) -m benchmarks.bench --shape tiny --out benchmarks/results
	$(PY) -m benchmarks.bench --shape bench --requests 2 --concurrency 1,2 --out benchmarks/results

configs: setup ## regenerate the committed model_repository/ configs from export/triton_config.py
	$(PY) -m export.triton_config model_repository

clean:
	rm -rf runs .cache
