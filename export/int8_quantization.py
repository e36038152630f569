"""fp32 ONNX -> dynamic int8 ONNX for CPUs, with optimum's ORTQuantizer.

What is quantized: the encoder's linear layers only - every MatMul whose second input is a
weight initializer (query/key/value, attention output, FFN in and out: ~99% of the encoder's
FLOPs at typical lengths). Weights are int8, per output channel, symmetric; activations are
quantized per tensor at run time (uint8, from each batch's own min/max: dynamic, so no
calibration set decides a range). What stays fp32: the embeddings (a Gather, no MatMul), the
attention scores and context (MatMuls of two activations), LayerNorm, Softmax, GELU and the
classifier head (Gemm): cheap, and where the score's last digits are decided.

Escalation (INT8_ESCALATION): when the int8 gate fails, the next rung keeps more of the graph in
fp32 and is gated again; after the last rung the export refuses. Rung 1 keeps the FFN output
projection in fp32 in every layer (its input is the post-GELU activation, the widest-ranged
tensor of a transformer layer and the classic source of int8 outliers); rung 2 also keeps the
last quarter of the layers entirely fp32 (errors made there reach the classifier unattenuated);
rung 3 also keeps the attention projections fp32 (query/key/value: an error in a query or key is
exponentiated by the softmax; the attention output: it feeds the residual stream directly), so
only the FFN input projections stay int8 (a third of the encoder's linear FLOPs; their error
passes through GELU and an fp32 projection). Rung 3 exists because the gate measures batch
compositions (export/parity.py): on the trained stand-in rungs 0-2 miss the score bound in the
batches the server forms (0.146-0.178 > 0.05) and rung 3 holds (docs/CPU.md).

The recipe is optimum's `AutoQuantizationConfig.avx512_vnni(is_static=False)` with the operator
list narrowed to MatMul, its weights chosen by the int8 kernel of the export host's CPU
(recipe_for, export/cpu_isa.py):
- VNNI CPUs (AVX512-VNNI / AVX-VNNI / AMX: Ice Lake and Zen 4 on): int8 weights, symmetric,
  full range (`reduce_range=False`), the preset as it is: ONNX Runtime's u8s8 kernel accumulates
  in int32 there (vpdpbusd).
- Without VNNI (AVX2, AVX512 without VNNI): uint8 weights, asymmetric (U8U8). ONNX Runtime's u8s8
  kernel there sums pairs of u8 x s8 products in int16 with saturation (vpmaddubsw): with
  full-range s8 weights the sums clip (onnxruntime docs/performance/model-optimizations/
  quantization.md, "When and why do I need to try U8U8?"). Measured on the trained stand-in with
  a real reranker's logit spread (docs/CPU.md): the VNNI recipe on this AVX2 CPU moves logits by
  0.94 (refused at every rung, bound 0.5), U8U8 by 0.41 (passes at rung 0).
Both are per output channel. The export's gate ran on the export host's CPU; the certificate says
which (`served.int8_gate_cpu`), and the serving CPU's own certificate run (self-certification at
start, `make verify`) covers a serving CPU of another ISA.
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx

# The linear layers of encoder layer N in the exported graph (export/onnx_export.py names nodes
# after the HF modules): /encoder/layer.N/{attention/self/{query,key,value},attention/output/dense,
# intermediate/dense,output/dense}/MatMul.
_LAYER = re.compile(r"/encoder/layer\.(\d+)/")
FFN_OUTPUT = "/output/dense/MatMul"  # not attention/output/dense: the layer's own output projection


@dataclass(frozen=True)
class Rung:
    """One escalation level: what stays fp32 on top of the always-fp32 parts."""

    name: str
    keep_ffn_output_fp32: bool = False
    keep_last_layers_fraction: float = 0.0  # the last ceil(fraction x layers) layers stay fp32
    keep_attention_fp32: bool = False  # query/key/value and the attention output projection

    def describe(self, layers: int) -> str:
        kept = []
        if self.keep_attention_fp32:
            kept.append("attention projections")
        if self.keep_ffn_output_fp32:
            kept.append("FFN output projections")
        last = self.last_layers(layers)
        if last:
            kept.append(f"the last {last} of {layers} layers")
        return ", ".join(kept) or "nothing beyond embeddings, attention scores, norms and head"

    def last_layers(self, layers: int) -> int:
        return math.ceil(self.keep_last_layers_fraction * layers)


INT8_ESCALATION: tuple[Rung, ...] = (
    Rung("all encoder linear layers int8"),
    Rung("FFN output fp32", keep_ffn_output_fp32=True),
    Rung("FFN output + last quarter fp32", keep_ffn_output_fp32=True, keep_last_layers_fraction=0.25),
    Rung(
        "FFN input only int8, last quarter fp32",
        keep_ffn_output_fp32=True,
        keep_last_layers_fraction=0.25,
        keep_attention_fp32=True,
    ),
)


@dataclass(frozen=True)
class Recipe:
    """The quantization parameters handed to optimum (one place, so a test can swap in a bad one)."""

    per_channel: bool = True
    weights_uint8: bool = False  # False: QInt8 weights (optimum's avx512_vnni default)
    weights_symmetric: bool = True
    reduce_range: bool = False


# VNNI CPUs: optimum's avx512_vnni preset as it is (QInt8 weights, symmetric, all 8 bits).
VNNI_RECIPE = Recipe()
# Without VNNI: U8U8 (uint8 weights, asymmetric), onnxruntime's advice where vpmaddubsw saturates.
NO_VNNI_RECIPE = Recipe(weights_uint8=True, weights_symmetric=False)
# None: chosen by the export host's CPU (recipe_for); a test may set one (a deliberately bad recipe).
INT8_RECIPE: Recipe | None = None


def recipe_for(kernel: str) -> Recipe:
    """The shipped recipe for an MLAS u8s8 kernel (export/cpu_isa.py; the self-certification reads
    the same rule there, cpu_isa.ships_uint8_weights, for certificates that do not record it)."""
    from export import cpu_isa

    return NO_VNNI_RECIPE if cpu_isa.ships_uint8_weights(kernel) else VNNI_RECIPE


def shipped_recipe() -> Recipe:
    from export import cpu_isa

    return INT8_RECIPE or recipe_for(cpu_isa.mlas_u8s8_kernel(cpu_isa.cpu_flags()))


@dataclass
class Int8Report:
    rung: str
    kept_fp32: str
    quantized_matmuls: int  # read back from the written graph (MatMulInteger nodes), not the request
    fp32_matmuls: int  # weight MatMuls left in fp32 in the written graph (the rung's and any the quantizer skipped)
    requested_matmuls: int  # what the rung asked the quantizer for
    recipe: dict


def weight_matmuls(model: onnx.ModelProto) -> list[tuple[str, int]]:
    """(node name, encoder layer) of every MatMul whose second input is an initializer."""
    initializers = {i.name for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in initializers:
            match = _LAYER.search(node.name)
            out.append((node.name, int(match.group(1)) if match else -1))
    return out


# What ONNX Runtime's dynamic quantizer writes for a quantized MatMul (onnxruntime/python/tools/
# quantization/operators/matmul.py, MatMulInteger class): DynamicQuantizeLinear on the activation,
# MatMulInteger on the int8 weight, then the scale Mul. ORT fuses it at load, the file keeps this.
QUANTIZED_MATMUL_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")


def written_matmuls(model: onnx.ModelProto) -> tuple[int, int]:
    """(quantized, still fp32) encoder weight MatMuls in a written graph: what the manifest counts."""
    quantized = sum(
        1 for n in model.graph.node if n.op_type in QUANTIZED_MATMUL_OPS and _LAYER.search(n.name) is not None
    )
    fp32 = sum(1 for _, layer in weight_matmuls(model) if layer >= 0)
    return quantized, fp32


def select_nodes(model: onnx.ModelProto, rung: Rung, layers: int) -> tuple[list[str], list[str]]:
    """(quantize, keep fp32) among the encoder's weight MatMuls for this rung."""
    first_fp32_layer = layers - rung.last_layers(layers)
    quantize: list[str] = []
    keep: list[str] = []
    for name, layer in weight_matmuls(model):
        if layer < 0:
            continue  # not an encoder layer: stays fp32 and is not counted
        attention = "/attention/" in name
        fp32 = (
            layer >= first_fp32_layer
            or (rung.keep_ffn_output_fp32 and name.endswith(FFN_OUTPUT) and not attention)
            or (rung.keep_attention_fp32 and attention)
        )
        (keep if fp32 else quantize).append(name)
    return quantize, keep


def quantization_config(recipe: Recipe, nodes: list[str]):
    from onnxruntime.quantization import QuantType
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    config = AutoQuantizationConfig.avx512_vnni(
        is_static=False,
        per_channel=recipe.per_channel,
        use_symmetric_weights=recipe.weights_symmetric,
        nodes_to_quantize=nodes,
        operators_to_quantize=["MatMul"],
    )
    # optimum's presets have no knob for these two; the dataclass fields are what it passes to
    # ONNX Runtime's quantizer (optimum/onnxruntime/quantization.py, ORTQuantizer.quantize).
    config.reduce_range = recipe.reduce_range
    if recipe.weights_uint8:
        config.weights_dtype = QuantType.QUInt8
    return config


def quantize_int8(fp32_path: Path, out_path: Path, layers: int, rung: Rung, recipe: Recipe | None = None) -> Int8Report:
    """Write the dynamic-int8 graph of `fp32_path` to `out_path` (a file named model.onnx in its
    own folder: optimum writes <stem>.onnx and ort_config.json there)."""
    from optimum.onnxruntime import ORTQuantizer

    recipe = recipe or shipped_recipe()
    model = onnx.load(str(fp32_path), load_external_data=False)  # names only
    quantize, _ = select_nodes(model, rung, layers)
    del model
    if not quantize:
        raise ValueError(f"int8 rung {rung.name!r} leaves no MatMul to quantize in {fp32_path}")
    if out_path.parent.exists():
        shutil.rmtree(out_path.parent)
    out_path.parent.mkdir(parents=True)
    # The constructor, not from_pretrained: an ONNX file is all it reads (from_pretrained only
    # resolves the same path), and every from_pretrained in the tree is held to use_safetensors.
    quantizer = ORTQuantizer(fp32_path)
    # One file: int8 weights + the fp32 embedding tables are ~1.3 GB for the real model (< 2 GB).
    written = Path(quantizer.quantize(quantization_config(recipe, quantize), out_path.parent, file_suffix=None))
    produced = written / fp32_path.name
    if produced != out_path:
        produced.rename(out_path)
    # Counted in the file written (names only), not taken from the request: a node the quantizer
    # skipped (a renamed node, an operator it does not handle) must not be reported as int8.
    quantized, fp32 = written_matmuls(onnx.load(str(out_path), load_external_data=False))
    return Int8Report(
        rung=rung.name,
        kept_fp32=rung.describe(layers),
        quantized_matmuls=quantized,
        fp32_matmuls=fp32,
        requested_matmuls=len(quantize),
        recipe=vars(recipe),
    )
