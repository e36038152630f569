"""The one place where every serving limit is defined; everything else derives from here.

Configs (tokenizer parameters, batch sizes, TensorRT profiles, warm-up shapes), the
client's chunking, the docs and the tests all read these values, so a limit changes in
exactly one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MODEL_ID = "BAAI/bge-reranker-v2-m3"

# bge-reranker-v2-m3's vocabulary (XLM-RoBERTa's 250,002 ids). The export replaces it with the
# exported model's own `config.vocab_size`; the committed reference configs carry this one.
# The cross_encoder refuses (Python backend) or clamps (exported graph) ids outside [0, vocab).
DEFAULT_VOCAB_SIZE = 250_002

# Tokens per query+passage pair, special tokens included. bge-reranker-v2-m3 is trained
# for 8192 positions; FlagReranker's default is 512.
DEFAULT_MAX_LENGTH = 512
MAX_SUPPORTED_LENGTH = 8192
SMALLEST_BUCKET = 16

# A typical RAG pair (query + passage): the TensorRT profiles are tuned for it and the
# cross-encoder warms up on it.
TYPICAL_PAIR_TOKENS = 256

# Pairs per request and per batch the cross-encoder runs. A 100-passage rerank is two requests
# from the client; 64 x 512 tokens is ~21 TFLOP, a few tens of ms on an H100.
DEFAULT_MAX_BATCH_SIZE = 64

# Batches are bounded by tokens, not only by pairs. Triton's dynamic batcher merges requests of
# one shape up to a model's max_batch_size whatever their length, so a per-request rule cannot
# bound what runs; a model's max_batch_size can. The cross-encoder is therefore served as one
# model per LENGTH CLASS (one TensorRT profile each): class i takes padded lengths in
# (bound[i-1], bound[i]] and at most MAX_BATCH_TOKENS // bound[i] pairs (never more than
# max_batch_size), so no batch it can form holds more than MAX_BATCH_TOKENS padded tokens.
# 32,768 = 64 x 512 keeps today's 64-pair batches at max_length 512 and gives the 8,192-token
# class 4 pairs (activation memory grows with length squared; 4 x 8192 was the long profile's
# batch before). The `length_router` model sends each row to its class (tensorrt_profiles.py).
MAX_BATCH_TOKENS = 32_768
LENGTH_CLASS_BOUNDS = (512, 2048, 8192)

# The export's gates (certificate noise floor, parity) score padded batches on the export host's
# CPU, where unfused attention holds rows x heads x length^2 floats: 16 rows of 8,192 tokens are
# tens of GB. They batch at most GATE_BATCH_TOKENS padded tokens (always 16 rows up to 512
# tokens, as before; one row at 8,192).
GATE_BATCH_TOKENS = 8_192
GATE_MAX_ROWS = 16


def gate_batch(length: int) -> int:
    """Rows per batch when the export's gates score rows padded to `length` tokens."""
    return max(1, min(GATE_MAX_ROWS, GATE_BATCH_TOKENS // length))


# Windowed scoring (`rerank_windows`): a passage longer than what fits beside the query is cut
# into overlapping windows of whole words; it gets its best window's score and span. Default
# stride: half a window (each token is seen by about two windows), set per request otherwise.
# The limits bound the work one request can cause: every window is a model row.
MAX_WINDOWS_PER_PASSAGE = 32
MAX_WINDOWS_PER_REQUEST = 256

# TensorRT builder workspace (both builders and the ONNX Runtime TensorRT accelerator): room for
# the fastest attention tactics at the largest profile shape.
TENSORRT_WORKSPACE_BYTES = 8 << 30
# A TensorRT plan's tactic scratch is part of every execution context's device memory, so the
# plan builders cap it per class plan at this (export/plan_memory.py: with the default instances
# at max_length 8,192 the six contexts and their weights must fit a 24 GB L4/A10; flash-style
# fused attention needs little scratch). The ONNX Runtime accelerator keeps TENSORRT_WORKSPACE_BYTES.
PLAN_WORKSPACE_BYTES = 1 << 30
# What a 24 GB card (L4: 23,034 MiB, A10: 23,028 MiB as nvidia-smi reports them) leaves to the
# class models: the smaller card, less 1 GiB for the CUDA context, Triton's CUDA memory pool
# (64 MiB default) and cuBLAS/cuDNN handles. The plan export refuses a design whose estimate, or
# whose measured context memory, exceeds it.
GPU_MEMORY_BUDGET_BYTES = (23_028 << 20) - (1 << 30)

# Raw text is rejected above this many UTF-8 bytes, before tokenization, so that one huge
# document cannot stall the tokenizer for everyone (TEI and others do the same).
MAX_TEXT_BYTES = 256 * 1024

# Dynamic batching: how long a request may wait for partners, and how much queue we accept
# before shedding load (a reranker behind search must fail fast, not queue for seconds).
MAX_QUEUE_DELAY_US = 2_000
# The CPU (python backend) class models wait for no partners: a model run there takes tens to
# hundreds of ms, so requests that arrive meanwhile queue and merge anyway, while the wait itself
# is added to every request at low concurrency (Triton waits the full delay when one request is
# queued: measured 2.6 ms of queue per run at one request in flight, benchmarks/run_cost.py).
CPU_QUEUE_DELAY_US = 0
# The length router's queue never merges (issue 26 item 5): one request per execute bounds its
# /dev/shm region, since a caller can address it through the proxy's gRPC with rows as wide as the
# message (export/triton_config.py _one_request_per_execute); the tokenizer's neither (the same reason).
# Python-backend stubs are processes: two keep tokenizing while one waits on the GPU model.
TOKENIZER_INSTANCES = 2
# Two instances of every cross-encoder model. With one, Triton 2.51's dynamic batcher leaves a
# queued request of another shape waiting ~500 ms (its idle wait) after the instance frees up:
# measured here, two concurrent requests of different buckets to one instance took 505-530 ms
# in 7 of 10 tries (15-36 ms otherwise); with two instances 9-33 ms, and a client call split
# into chunks of two buckets went from p50 540 ms to 55 ms (benchmarks/batcher_stall.py).
# Every rerank call whose documents span two buckets hits it. On a GPU the second instance
# also overlaps one batch's host work with the other's compute; it costs a second copy of
# the engine's weights (~1.1 GB in fp16).
CROSS_ENCODER_INSTANCES = 2
# The length router waits on the class models (BLS) inside execute(); a second instance keeps a
# short request from waiting behind a long one's execute. With one request per execute (no
# batcher, issue 26 item 5) this many requests have parts at the class models at a time (the queue
# timeouts' drain below). Measured (benchmarks/router_batching.py, CPU stand-in, concurrency 4 and
# 8, window mode at 512 and two-class `rerank` at 2,048): 2 and 4 instances both within noise of
# the batched router, 4 no faster than 2; each instance is one more stub and /dev/shm region
# (export/shm_budget.py). Not measured on a GPU.
ROUTER_INSTANCES = 2
MAX_QUEUE_SIZE = 256

# Cost model of one cross-encoder run, for the length router's choice to split a request's rows
# into runs of different widths (routing.SplitCost): a split saves padded tokens and costs one
# more run. RUN_OVERHEAD_S is a run's fixed cost (BLS call, batcher queue delay, backend
# execute, copies); DEVICE_FLOPS the rate at which the model computes tokens. Their product over
# a token's FLOPs is a run's cost in padded tokens of that model. CPU (python backend): measured
# on this 2-core machine by `python -m benchmarks.run_cost` (docs/PERFORMANCE.md, "Cost of a
# run"). GPU backends: estimates, not measured (no GPU here): a run keeps Triton's per-request
# path (queue delay, BLS, input copies, a kernel launch sequence) while a token costs ~1e3x less.
# CPU, measured (benchmarks/results/run_cost.json): a one-row run sent straight to `cross_encoder`
# took 1.04 ms on the server beyond the same run in process, and the best fp32 GEMM rate was
# 96 GFLOP/s (40-186 GFLOP/s seen on this shared machine: a quieter one makes a token cheaper and a
# run worth more tokens); either way the real model's run costs well under one token here, so
# every bucket edge pays.
RUN_OVERHEAD_S = {"python": 0.00104, "onnxruntime": 0.001, "tensorrt": 0.001}
DEVICE_FLOPS = {"python": 96e9, "onnxruntime": 400e12, "tensorrt": 400e12}
# The cost of one more ONNX Runtime run inside the Python-backend class model's own process (no
# Triton request, no BLS, no queue): the class model splits a batch whose rows span several
# buckets where that pays (routing.batch_parts), which is how the direct one-class `rerank` path
# gets the router's padding savings without its hop (issue 30). Measured here: a whole 1 x 16 run
# of the tiny stand-in in process took 0.183 ms (run_cost.json `in_process_run_ms_median`), an upper
# bound of a run's fixed cost: ~89 tokens of the tiny stand-in, 0.12 of the 6 x 1024 one, 0.03 of
# the real model, so on this CPU nearly every bucket edge pays.
IN_PROCESS_RUN_S = 0.000183

# How long a request may wait in a queue before it is shed (REJECT): for the tokenizer, and for the
# first length class (and the router) of every export. Longer classes wait longer, by their cost:
QUEUE_TIMEOUT_US = 5_000_000

# Queue timeouts per length class (issue 29 item 4). The length router sends every part of a
# request to its class model at once (BLS), so on an idle server the parts of ONE request already
# queue behind each other: a request of R rows (the most a request holds: its windows in window
# mode) is ceil(R / batch) batches of its class, ROUTER_INSTANCES requests are routed at once (one
# per router instance: the router's queue never merges, so exactly that many), and
# CROSS_ENCODER_INSTANCES batches run at a time. A class's worst drain is its rounds of batches
# times the cost of one batch; its queue timeout is QUEUE_TIMEOUT_US scaled by its worst drain over
# the first class's (export/tensorrt_profiles.py `queue_timeout_us`), so "Request timeout expired"
# means other callers' load, not one caller's own long request. Batch cost: FLOPs per pair of n
# tokens on the served geometry, PAIR_LINEAR_FLOPS * n + PAIR_ATTENTION_FLOPS * n^2 (the team
# notes' 24 x 1024 figures; only their ratio matters: the long classes' batches cost more per
# token, attention growing with n).
# (layers, hidden) of bge-reranker-v2-m3; an export records its model's own (RepositorySpec).
MODEL_GEOMETRY = (24, 1024)


def token_flops(layers: int, hidden: int) -> tuple[int, int]:
    """(FLOPs per token outside attention, attention FLOPs per token and attended token) of an
    encoder of this geometry: 24 h^2 per layer (QKV, output and the 4h FFN, 2 FLOPs a MAC) and
    4 h per layer (scores and weighted sum). One definition: the queue timeouts and the router's
    split cost both derive from it."""
    return 24 * layers * hidden**2, 4 * layers * hidden


PAIR_LINEAR_FLOPS, PAIR_ATTENTION_FLOPS = token_flops(*MODEL_GEOMETRY)


def length_buckets(max_length: int, smallest: int = SMALLEST_BUCKET) -> list[int]:
    """Padded lengths the tokenizer may emit: fine steps, so padding stays small.

    Triton's dynamic batcher merges only requests of identical shape, so every request is
    padded to one of these lengths. The step is 1/8 of the power of two below (at least 16):
    16, 32, 48, ..., 256, 288, 320, ..., 512, 576, ... - at most ~12% padding on a request's
    longest pair, while the number of distinct shapes (and TensorRT tactics) stays small.
    """
    if not smallest <= max_length <= MAX_SUPPORTED_LENGTH:
        raise ValueError(f"max_length must be in [{smallest}, {MAX_SUPPORTED_LENGTH}], got {max_length}")
    buckets: list[int] = []
    length = smallest
    while length < max_length:
        buckets.append(length)
        power = 1 << (length.bit_length() - 1)  # largest power of two <= length
        step = max(smallest, power // 8)
        length += step
    buckets.append(max_length)
    return buckets


@dataclass(frozen=True)
class ServingLimits:
    """Limits for one exported repository, carried into every generated config."""

    max_length: int = DEFAULT_MAX_LENGTH
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_text_bytes: int = MAX_TEXT_BYTES
    buckets: list[int] = field(default_factory=list)
    vocab_size: int = DEFAULT_VOCAB_SIZE

    def __post_init__(self) -> None:
        if not self.buckets:
            object.__setattr__(self, "buckets", length_buckets(self.max_length))
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if self.vocab_size < 1:
            raise ValueError("vocab_size must be >= 1")
        if self.buckets[-1] != self.max_length or sorted(set(self.buckets)) != self.buckets:
            raise ValueError("buckets must be strictly increasing and end at max_length")

    @property
    def query_max_length(self) -> int:
        """FlagReranker's rule: the query keeps at most 3/4 of the pair's tokens."""
        return self.max_length * 3 // 4


# --- The front proxy (NGINX) in front of Triton. tritonserver 2.51 has no flag that caps a
# request's size: it buffers a whole gRPC message (up to 2 GB) or HTTP body before any model
# sees it. The proxy refuses a body above this many bytes before Triton reads it. The largest
# valid `rerank` request is max_batch_size pairs of two texts at MAX_TEXT_BYTES each; the
# overhead covers the protobuf/JSON framing, tensor names and the 4-byte length prefix of
# every BYTES element (a few KiB at 64 pairs), with room to spare. A JSON (non-binary) HTTP
# body that escapes its text can exceed it: clients send BYTES as binary data (tritonclient
# and reranker_client do). ---
PROXY_BODY_OVERHEAD_BYTES = 1 << 20
PROXY_MAX_BODY_BYTES = 2 * DEFAULT_MAX_BATCH_SIZE * MAX_TEXT_BYTES + PROXY_BODY_OVERHEAD_BYTES
# What reaches Triton where no door bounds it: tritonserver 2.51's gRPC server takes messages up to
# INT32_MAX bytes (server r24.10 src/grpc/grpc_server.cc: builder_.SetMaxMessageSize(MAX_GRPC_MESSAGE_SIZE),
# INT32_MAX in src/common.h), and
# has no flag to lower it. export/shm_budget.py sizes /dev/shm by the door's cap.
TRITON_GRPC_MAX_MESSAGE_BYTES = 2**31 - 1
# Ports the proxy listens on (the Service and the compose file publish these instead of
# Triton's own when the proxy is on).
PROXY_HTTP_PORT = 8080
PROXY_GRPC_PORT = 8081

# --- The serving process and its pod. The chart's values, compose, the KServe manifest and the
# local launcher carry these numbers; tests/test_deploy.py fails when one of them drifts. ---

# The Python backend moves every tensor of a tokenizer execute through a shared-memory region
# per stub process in /dev/shm. An execute is one request (the tokenizer's queue never merges:
# export/triton_config.py), so its worst case is a full request of pairs at the byte limit on
# both texts (64 x 2 x 256 KiB = 32 MiB in: the proxy's cap less its framing) plus its token ids
# and mask out, one row per window in window mode (2 x int64 x 256 windows x 8192 = 32 MiB at the
# longest max_length; the length router moves the same rows). Triton's 1 MiB default region would
# grow in 1 MiB steps (dozens of remaps on the hot path); one region holds a worst execute with
# room for a second in flight, and growth comes in worst-execute steps. The ceiling a region can
# reach and the total per pod: export/shm_budget.py (docs/SECURITY.md "Shared memory").
PYTHON_SHM_WORST_EXECUTE_BYTES = (
    2 * DEFAULT_MAX_BATCH_SIZE * MAX_TEXT_BYTES
    + 2 * 8 * max(DEFAULT_MAX_BATCH_SIZE, MAX_WINDOWS_PER_REQUEST) * MAX_SUPPORTED_LENGTH
)
PYTHON_SHM_DEFAULT_BYTES = 2 * PYTHON_SHM_WORST_EXECUTE_BYTES
PYTHON_SHM_GROWTH_BYTES = PYTHON_SHM_WORST_EXECUTE_BYTES

# The GPU model's ONNX Runtime CPU thread pool (onnxruntime backend parameter
# `intra_op_thread_count`). TensorRT runs the graph on the GPU; the CPU pool only copies
# inputs and runs any node TensorRT rejects. Left at 0, ORT starts one spinning thread per
# core of the *node* (it does not read the cgroup limit), which on a 64-core GPU node fights
# the tokenizer stubs for the pod's few CPUs and gets the container throttled.
GPU_MODEL_INTRA_OP_THREADS = 2

# Precisions an export can produce. int8 is a CPU profile (dynamic int8 MatMuls, docs/CPU.md):
# the python backend (ONNX Runtime inside a Python model, the local server) and the onnxruntime
# backend with KIND_CPU instances (the NGC image); no TensorRT.
PRECISIONS = ("fp16", "fp32", "int8")
CPU_ONLY_PRECISIONS = ("int8",)

# The CPU pod (onnxruntime backend, KIND_CPU: PRECISION=int8). ONNX Runtime does not read the
# cgroup CPU limit: left at 0, every instance starts one spinning thread per core of the *node*.
# So the threads are sized from the pod's CPUs here and the chart's CPU values
# (deploy/helm/values/cpu.yaml) carry the same numbers (tests/test_int8.py checks they agree):
# CPU_POD_CPUS = cross-encoder instances x intra-op threads + what the tokenizer and router
# stubs use. Two instances as on the GPU (CROSS_ENCODER_INSTANCES: the batcher's ~500 ms stall
# with one), each with half the compute cores. 6 CPUs in all so that the pod, its front proxy
# (500m) and the node's daemonsets fit an 8-vCPU node's allocatable CPU (~7.9 cores on EKS, GKE
# and AKS: tests/test_deploy_cluster.py::test_the_cpu_pod_fits_common_8_vcpu_nodes); with 3
# threads (8 CPUs) the pod stayed Pending there.
CPU_MODEL_INTRA_OP_THREADS = 2
CPU_POD_STUB_CPUS = 2
CPU_POD_CPUS = CROSS_ENCODER_INSTANCES * CPU_MODEL_INTRA_OP_THREADS + CPU_POD_STUB_CPUS

# Graceful shutdown. preStop sleeps first, so endpoint removal reaches kube-proxy and clients
# re-resolving DNS (see below) before Triton stops accepting; then Triton drains
# in-flight requests for up to EXIT_TIMEOUT_S (a request may queue QUEUE_TIMEOUT_US and then
# run). The pod's terminationGracePeriodSeconds must cover both plus a margin.
PRESTOP_SLEEP_S = 10
EXIT_TIMEOUT_S = 30
SHUTDOWN_MARGIN_S = 10
TERMINATION_GRACE_S = PRESTOP_SLEEP_S + EXIT_TIMEOUT_S + SHUTDOWN_MARGIN_S

# Clients balance gRPC over the headless Service by re-resolving it every DNS_REFRESH_S
# (client/src/reranker_client/endpoints.py); keep that shorter than PRESTOP_SLEEP_S.

# The health probe (docker/probe.py): one pair through the `rerank` ensemble. Its HTTP
# timeout is below the kubelet's timeoutSeconds so the probe reports why it failed.
PROBE_TIMEOUT_S = 3
PROBE_KUBELET_TIMEOUT_S = PROBE_TIMEOUT_S + 2


def python_backend_flags() -> list[str]:
    return [
        f"--backend-config=python,shm-default-byte-size={PYTHON_SHM_DEFAULT_BYTES}",
        f"--backend-config=python,shm-growth-byte-size={PYTHON_SHM_GROWTH_BYTES}",
    ]


def server_flags() -> list[str]:
    """tritonserver flags every deployment passes (chart, compose, KServe, local launcher)."""
    return [f"--exit-timeout-secs={EXIT_TIMEOUT_S}", *python_backend_flags()]
