"""How much /dev/shm the Python backend can take, from the served configs (issue 26 item 5).

Each Python-model instance is a stub process with its own shared-memory region
(`--backend-config=python,shm-default-byte-size`, `shm-growth-byte-size`). Every tensor of an
execute - the inputs of all the requests the dynamic batcher merged, and the outputs - lives in
that region at once, and a region never shrinks. python_backend r24.10 src/shm_manager.cc
`GrowIfNeeded(byte_size)`: when an allocation of `a` bytes does not fit, the region grows by
growth x (a // growth + 1) <= a + growth. It grows only while the execute's bytes do not fit, so
a region whose executes hold at most U bytes ends below max(default, 2 x U + growth) (the last
growth starts from less than U + a and adds at most a + growth, a <= U). This holds only while
nothing of an execute outlives it: a tokenizer refusal's traceback once held its execute's
requests (and their inputs in the region) until Python's cyclic GC ran (pair_tokenization._kept).

U per model, from its config: fixed-size tensors are bounded by rows (the batcher never merges
past max_batch_size; -1 dims at the export's max_length). Text (BYTES) is not: one row can carry
a whole request message, up to what the door in front of Triton admits (the proxy's body cap;
tritonserver's own gRPC port takes 2 GiB). So a model with text inputs takes
`requests_per_execute` requests per execute (1: the tokenizer's queue never merges), each up to
`max_request_bytes` of text, and emits up to `routed_batch_size` rows per request (window mode).
A model with -1 dims that a caller can address directly takes a whole message as one request
(`direct_calls`: one per execute for the length router, whose queue never merges either).
A model that calls others (BLS: the length router) also holds its calls' inputs and their answers.
The need is the sum over Python models of instances x their region's ceiling; tests/test_deploy.py
checks it against every rendered chart's /dev/shm at every max_length, and
tests/test_hostile_requests.py measures the regions under a burst of 16-47 MiB passages."""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from export.settings import (
    PROXY_BODY_OVERHEAD_BYTES,
    PROXY_MAX_BODY_BYTES,
    PYTHON_SHM_DEFAULT_BYTES,
    PYTHON_SHM_GROWTH_BYTES,
)
from reranker_client.contract import Param

_DTYPE_BYTES = {
    mc.TYPE_BOOL: 1,
    mc.TYPE_INT32: 4,
    mc.TYPE_INT64: 8,
    mc.TYPE_FP16: 2,
    mc.TYPE_FP32: 4,
}


def _row_bytes(tensors, max_length: int) -> int:
    total = 0
    for t in tensors:
        if t.data_type == mc.TYPE_STRING:
            continue  # text: bounded per request, not per row
        elements = 1
        for d in t.dims:
            elements *= max_length if d == -1 else d
        total += elements * _DTYPE_BYTES[t.data_type]
    return total


def requests_per_execute(config: mc.ModelConfig) -> int:
    """Requests one execute may merge; one stub runs one execute at a time, an `async def execute`
    included (python_backend r24.10 src/pb_stub.cc ProcessRequests, lines 684-690: a non-decoupled
    model's coroutine is run to completion, RunCoroutine(..., false /* in_background */)).

    - No `dynamic_batching`: one (core r24.10 src/backend_model.cc SetConfiguredScheduler: a
      DynamicBatchScheduler with batching disabled).
    - `preferred_batch_size: [1]` and no queue delay (triton_config._one_request_per_execute, the
      tokenizer and the length router): one. GetDynamicBatch (core r24.10
      dynamic_batch_scheduler.cc, lines 536-600) marks the batch's end where the next request would
      pass the largest preferred size and, with no delay, sends the marked batch: the first request.
    - Otherwise max_batch_size (every request holds at least one row): a preferred size is no cap
      once a queue delay has passed - the batcher then sends "whatever is pending" (lines 612-619;
      a burst through the proxy ran executes of 7 requests with a preferred size of 4 and a delay
      of 200 us)."""
    if not config.HasField("dynamic_batching"):
        return 1
    batching = config.dynamic_batching
    if list(batching.preferred_batch_size) == [1] and batching.max_queue_delay_microseconds == 0:
        return 1
    return config.max_batch_size


def _variable_width(config: mc.ModelConfig) -> bool:
    return any(-1 in t.dims for t in config.input)


def execute_bytes(
    config: mc.ModelConfig,
    max_length: int,
    routed_batch_size: int,
    max_request_bytes: int = PROXY_MAX_BODY_BYTES,
    direct_calls: bool = True,
) -> int:
    """The most bytes one execute of this Python model holds in its region.

    `direct_calls`: the door lets a caller address this model by name (the proxy's gRPC passes
    ModelInfer for every model: the name is inside the message). Then a -1 dim is bounded by
    nothing but the request's bytes: Triton checks a -1 dim against no limit, so a one-row
    `length_router` request of [1, 2097152] int64 ids is copied into the region before the model
    refuses it (review of issue 26: its region grew 128 -> 576 MiB through the proxy with the
    batcher merging 17 such requests; the router's queue never merges since, so one such request per
    execute). Where only the ensembles are reachable (REST exclusive), rows arrive from the
    tokenizer, at most max_length wide."""
    if any(t.data_type == mc.TYPE_STRING for t in config.input):
        requests = requests_per_execute(config)
        return requests * (max_request_bytes + routed_batch_size * _row_bytes(config.output, max_length))
    rows = config.max_batch_size
    # A BLS caller's region also holds the inputs of its calls (the stub copies them in before it
    # sends them; at most its own rows, each cut or padded to a bucket no wider than max_length:
    # routing.cut) and the calls' outputs.
    calls = rows * (_row_bytes(config.input, max_length) + _row_bytes(config.output, max_length))
    bls = Param.CLASS_MODELS in config.parameters
    if direct_calls and _variable_width(config):
        # The requests as sent (a -1 dim as wide as the message), its outputs, and its calls.
        sent = requests_per_execute(config) * max_request_bytes + rows * _row_bytes(config.output, max_length)
        return sent + (calls if bls else 0)
    return (2 if bls else 1) * calls


def region_ceiling(execute: int) -> int:
    """The largest a stub's region can grow with executes of at most `execute` bytes."""
    return max(PYTHON_SHM_DEFAULT_BYTES, 2 * execute + PYTHON_SHM_GROWTH_BYTES)


def shm_need(
    configs: dict[str, mc.ModelConfig],
    max_length: int,
    routed_batch_size: int,
    max_request_bytes: int = PROXY_MAX_BODY_BYTES,
    direct_calls: bool = True,
) -> dict[str, int]:
    """Per Python model: its instances x its region's ceiling (sum the values for /dev/shm)."""
    return {
        name: sum(g.count for g in c.instance_group)
        * region_ceiling(execute_bytes(c, max_length, routed_batch_size, max_request_bytes, direct_calls))
        for name, c in configs.items()
        if c.backend == "python"
    }


def client_request_bytes(tokenizer: mc.ModelConfig) -> int:
    """The most bytes one request of our client (and so of the REST service) carries: at most
    max_batch_size pairs, each text cut (or, strict, refused) client-side at the published
    max_text_bytes, plus the framing the proxy's cap allows for. A door that admits only these
    callers bounds a tokenizer execute by this."""
    text_bytes = int(tokenizer.parameters[Param.MAX_TEXT_BYTES].string_value)
    return 2 * tokenizer.max_batch_size * text_bytes + PROXY_BODY_OVERHEAD_BYTES
