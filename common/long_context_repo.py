"""The session's stand-in served at another max_length, without a second full export.

A full export at max_length 8,192 scores its certificate with PyTorch at every length up to
8,192 (about 95 s and 14 GB here): too heavy for `make test`. The served graph bounds its inputs
to the export's max_length (export/onnx_export.py `bound_inputs`), so the graph itself must be
exported again at the new length (under a second); the rest of the repository (tokenizer,
Python models) is the session's, the configs and length-class folders are regenerated exactly
as the export writes them. No certificate or gate covers this graph: the tests that use it
compare with FlagReranker themselves.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export.onnx_export import export_onnx
from export.repository import CONTRACT_FILE, CROSS_ENCODER_FILES, link_model_files
from export.settings import ServingLimits
from export.tensorrt_profiles import length_classes
from export.triton_config import WARMUP_FOLDER, RepositorySpec, all_configs, to_pbtxt, warmup_files
from reranker_client.contract import CROSS_ENCODER


def serve_at(source: Path, model_dir: Path, target: Path, max_length: int, tokenizer_instances: int = 1) -> Path:
    from transformers import XLMRobertaForSequenceClassification

    shutil.copytree(source, target)
    exported = text_format.Parse((source / CROSS_ENCODER / "config.pbtxt").read_text(), mc.ModelConfig())
    spec = RepositorySpec(
        backend="python",
        precision="fp32",
        tokenizer_instances=tokenizer_instances,
        limits=ServingLimits(max_length=max_length, vocab_size=int(exported.parameters["vocab_size"].string_value)),
    )
    model = XLMRobertaForSequenceClassification.from_pretrained(model_dir, use_safetensors=True).eval()
    first = target / CROSS_ENCODER / "1"
    for stale in first.glob("model.onnx*"):
        stale.unlink()
    export_onnx(model, first / "model.onnx", max_length)
    for length_class in length_classes(spec.limits):
        folder = target / length_class.model
        (folder / "1").mkdir(parents=True, exist_ok=True)
        if length_class.model != CROSS_ENCODER:
            link_model_files(first, folder / "1")
            for filename in (*CROSS_ENCODER_FILES, CONTRACT_FILE):
                shutil.copy2(first / filename, folder / "1" / filename)
        shutil.rmtree(folder / WARMUP_FOLDER, ignore_errors=True)
        (folder / WARMUP_FOLDER).mkdir()
        for filename, content in warmup_files(spec.limits, length_class).items():
            (folder / WARMUP_FOLDER / filename).write_bytes(content)
    for name, config in all_configs(spec).items():
        (target / name / "config.pbtxt").write_text(to_pbtxt(config))
    return target
