"""PyTorch -> ONNX (opset 17, dynamic batch and sequence, outputs `logit` and `score`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx

from reranker_client import contract

OPSET = 17  # one LayerNormalization op instead of Pow/ReduceMean, which overflow in fp16
INPUT_NAMES = tuple(t.name for t in contract.CROSS_ENCODER_INPUTS)
OUTPUT_NAMES = tuple(t.name for t in contract.CROSS_ENCODER_OUTPUTS)
PROTOBUF_LIMIT = 2 * 1024**3  # a single .onnx protobuf cannot exceed 2 GB


# Additive attention mask for padded keys. Finite in fp16 (HF's float32-min becomes -inf there, and
# a row with no real token then turns into NaN), and exp(-1e4) is exactly 0 in fp32 too, so scores
# are unchanged (the fp32 gate checks it).
MASK_VALUE = -10000.0


def position_ids(input_ids, padding_idx: int):
    """HF's RoBERTa position ids (padding_idx + 1 + index for tokens, padding_idx for pads) without
    CumSum: TensorRT 10.5 has no cumulative layer and turns CumSum into a sequential loop over the
    sequence. Identical to HF's cumsum for right-padded input whose text holds no literal pad token
    (the tokenizer model pads on the right; a literal `<pad>` inside a text is the one difference)."""
    import torch

    steps = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0) + (padding_idx + 1)
    return torch.where(input_ids.ne(padding_idx), steps, torch.full_like(steps, padding_idx))


def bound_inputs(input_ids, attention_mask, max_length: int, vocab_size: int):
    """The graph's own trust boundary: whatever a direct caller of `cross_encoder` sends, the
    model does at most max_length tokens of work per row and never gathers outside its tables.

    - Columns past max_length are dropped (Slice): a [16, 8192] request costs what [16, 512]
      costs, and positions stay inside the position table (8,194 rows).
    - Ids outside [0, vocab) are clamped (Max/Min): ONNX Runtime CPU checks Gather indices, but
      TensorRT does not, and an out-of-range gather reads other memory.
    - The mask becomes 0/1 (Greater): a mask value of 1000 would otherwise make the additive mask
      +1e7, which overflows fp16 into inf/NaN.
    Every request the tokenizer makes (<= max_length columns, ids < vocab, mask 0/1) passes
    through unchanged: the fp32 parity gate and the certificate run through this graph and
    check it. The batch dimension is bounded by Triton itself (max_batch_size in the config:
    Triton refuses a larger request and the batcher never builds a larger batch)."""
    import torch

    input_ids = input_ids[:, :max_length]
    attention_mask = attention_mask[:, :max_length]
    # Max then Min, not Clip: onnx-tensorrt lists INT64 for Max/Min, and Clip for floats only.
    input_ids = torch.minimum(torch.maximum(input_ids, input_ids.new_tensor(0)), input_ids.new_tensor(vocab_size - 1))
    return input_ids, attention_mask.gt(0).to(torch.int64)


class CrossEncoderGraph:
    """The HF classifier as an export graph: returns the raw logit and sigmoid(logit), fp32.

    It calls the model's own embeddings, encoder and head, but builds the two inputs HF would build
    in ways TensorRT runs well: explicit position ids (no CumSum) and a compact [B, 1, 1, S]
    additive mask broadcast over heads and query rows (HF's SDPA path expands it to [B, 1, S, S]:
    3 GiB of fp32 at 4 x 8,192 tokens). Inputs are bounded first (`bound_inputs`)."""

    def __new__(cls, model, max_length: int):
        import torch

        padding_idx = model.config.pad_token_id
        vocab_size = model.config.vocab_size

        class _Graph(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                input_ids, attention_mask = bound_inputs(input_ids, attention_mask, max_length, vocab_size)
                roberta = self.model.roberta
                hidden = roberta.embeddings(input_ids=input_ids, position_ids=position_ids(input_ids, padding_idx))
                additive = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * MASK_VALUE
                hidden = roberta.encoder(hidden, attention_mask=additive)[0]
                logit = self.model.classifier(hidden).float()
                return logit, torch.sigmoid(logit)

        # eval(): the exporter restores the wrapper's mode afterwards, recursively; a wrapper left
        # in training mode would switch dropout on in the caller's model.
        return _Graph().eval()


def export_onnx(model, out_path: Path, max_length: int, graph_module=None) -> Path:
    """Export fp32; the weights go to `<name>.data` beside the graph when over 2 GB."""
    import torch

    graph = graph_module if graph_module is not None else CrossEncoderGraph(model, max_length)
    dummy = (torch.ones(2, 16, dtype=torch.int64), torch.ones(2, 16, dtype=torch.int64))
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    dynamic_axes.update({name: {0: "batch"} for name in OUTPUT_NAMES})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = out_path.parent / "torch_export"
    tmp_dir.mkdir(exist_ok=True)
    tmp_path = tmp_dir / out_path.name
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: ONNX Runtime's transformer optimizer recognises its patterns.
        torch.onnx.export(
            graph,  # type: ignore[arg-type]  # CrossEncoderGraph builds a torch Module
            dummy,
            str(tmp_path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    save_onnx(onnx.load(str(tmp_path)), out_path)
    for leftover in tmp_dir.iterdir():
        leftover.unlink()
    tmp_dir.rmdir()
    return out_path


def initializer_bytes(model: onnx.ModelProto) -> int:
    import numpy as np

    total = 0
    for tensor in model.graph.initializer:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        total += int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
    return total


def save_onnx(model: onnx.ModelProto, out_path: Path) -> Path:
    """Save in one file, or with all weights in one external `<name>.data` file if too big."""
    external = initializer_bytes(model) > PROTOBUF_LIMIT - 64 * 1024**2
    if external:
        onnx.save_model(
            model,
            str(out_path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=out_path.name + ".data",
            size_threshold=1024,
        )
        # save_model moved the weights out of the in-memory proto; put them back so the
        # caller's model stays usable after the files are gone.
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(out_path.parent))
    else:
        onnx.save_model(model, str(out_path))
    return out_path


# Initializers at least this large (the weight matrices and the embedding tables: nearly all of
# the 2.27 GB) are stored as fp16; LayerNorm scales and biases stay fp32.
FP16_STORAGE_MIN_ELEMENTS = 65536


def with_fp16_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same fp32 computation with its large weights stored as fp16, each behind a Cast back
    to fp32: 1.1 GB instead of 2.27 GB, so the graph fits one protobuf file, no external data.

    For an fp16 TensorRT engine this changes nothing TensorRT computes: it rounds fp32 weights to
    fp16 itself, and the fp16 -> fp32 -> fp16 round trip is exact. It is what the onnxruntime
    backend serves at PRECISION=fp16, so the ONNX Runtime TensorRT EP never has to find a 2 GB
    external data file (a path with reported failures; not checked here without a GPU)."""
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    casts = []
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type != onnx.TensorProto.FLOAT or int(np.prod(tensor.dims)) < FP16_STORAGE_MIN_ELEMENTS:
            continue
        values = numpy_helper.to_array(tensor)
        half = values.astype(np.float16)
        if not np.all(np.isfinite(half)):
            continue  # a weight beyond the fp16 range stays fp32
        stored = numpy_helper.from_array(half, f"{tensor.name}__fp16")
        casts.append(
            onnx.helper.make_node(
                "Cast", [stored.name], [tensor.name], to=onnx.TensorProto.FLOAT, name=f"{tensor.name}__to_fp32"
            )
        )
        graph.initializer[index].CopyFrom(stored)
    # Casts first: every consumer still reads the original name, now a Cast output.
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model
