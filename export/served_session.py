"""What ONNX Runtime hands the TensorRT EP, emulated on CPU.

Triton's onnxruntime backend builds one session per class model from its config: the graph
optimization level from `optimization { graph { level } }` (triton_config.ort_graph_level) and
the intra-op threads from the `intra_op_thread_count` parameter. The level's graph transformers
that run before partitioning (constant folding among them, from ORT_ENABLE_BASIC up) are
provider-independent, so a CPU session at the same options writes (`optimized_model_filepath`)
the graph the TensorRT EP is offered on a GPU. The EP then serializes the subgraph it takes,
initializers included, into one protobuf (onnxruntime tensorrt_execution_provider.cc,
GetSupportedList: `model_proto->SerializeToString(string_buf)`), which cannot exceed 2 GiB.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from tritonclient.grpc import model_config_pb2 as mc

from export.triton_config import ort_graph_level

PROTOBUF_LIMIT_BYTES = 2**31 - 1


def session_options(config: mc.ModelConfig, optimized_model: Path | None = None):
    """onnxruntime.SessionOptions as Triton's onnxruntime backend sets them from `config`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ort_graph_level(config))
    threads = config.parameters.get("intra_op_thread_count")
    if threads is not None and threads.string_value:
        options.intra_op_num_threads = int(threads.string_value)
    if optimized_model is not None:
        options.optimized_model_filepath = str(optimized_model)
    return options


@dataclass(frozen=True)
class EpView:
    """The initializers of the graph the TensorRT EP is offered."""

    graph_level: str
    bytes_by_dtype: dict[str, int]
    float_parameters: int  # elements of every floating-point initializer
    large_dtypes: set[str]  # dtypes of the initializers holding >= `large` elements

    @property
    def float_bytes(self) -> int:
        return sum(v for k, v in self.bytes_by_dtype.items() if k.startswith("float"))

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_by_dtype.values())


def summarise(model: onnx.ModelProto, graph_level: str, large: int) -> EpView:
    bytes_by_dtype: Counter[str] = Counter()
    float_parameters = 0
    large_dtypes: set[str] = set()
    for tensor in model.graph.initializer:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
        count = int(np.prod(tensor.dims))
        bytes_by_dtype[dtype.name] += count * dtype.itemsize
        if np.issubdtype(dtype, np.floating):
            float_parameters += count
            if count >= large:
                large_dtypes.add(dtype.name)
    return EpView(graph_level, dict(bytes_by_dtype), float_parameters, large_dtypes)


def ep_view(graph: Path, config: mc.ModelConfig, work_dir: Path, large: int) -> EpView:
    """Open `graph` on ONNX Runtime CPU with the session options `config` implies, write the
    optimized graph and summarise its initializers."""
    import onnxruntime as ort

    optimized = Path(work_dir) / f"ep_view_{ort_graph_level(config)}.onnx"
    ort.InferenceSession(str(graph), session_options(config, optimized), providers=["CPUExecutionProvider"])
    view = summarise(onnx.load(str(optimized)), ort_graph_level(config), large)
    optimized.unlink(missing_ok=True)
    for data in optimized.parent.glob(optimized.name + "*.data"):
        data.unlink()
    return view
