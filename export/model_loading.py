"""Resolve a Hub id or local folder to a verified XLM-RoBERTa cross-encoder on disk.

Safetensors only and never `trust_remote_code`: an export must not execute code or unpickle
data that came with the weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

ALLOWED_FILES = ["*.safetensors", "*.json", "sentencepiece.bpe.model", "*.txt"]
EXPECTED_ARCHITECTURE = "XLMRobertaForSequenceClassification"


class ModelRejected(RuntimeError):
    """The source is not something this project can serve; the message says why."""


class HubUnreachable(RuntimeError):
    """The Hugging Face Hub could not be reached."""


@dataclass(frozen=True)
class ModelSource:
    model_id: str  # what the user asked for
    local_dir: Path  # where the files are
    revision: str | None  # Hub commit, when downloaded
    file_sha256: dict[str, str]  # weights and tokenizer files, for the parity report


def resolve(model: str, revision: str | None = None) -> ModelSource:
    path = Path(model).expanduser()
    if path.is_dir():
        local_dir, resolved_revision = path.resolve(), None
    elif path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise ModelRejected(f"{model!r} is neither a local model folder nor a Hub id like 'org/name'")
    else:
        local_dir, resolved_revision = _download(model, revision)
    _check_config(local_dir)
    weights = sorted(local_dir.glob("*.safetensors"))
    if not weights:
        pickled = [p.name for p in local_dir.glob("*.bin")] + [p.name for p in local_dir.glob("*.pt")]
        hint = f" (found pickle files {pickled}, which are never loaded)" if pickled else ""
        raise ModelRejected(f"{local_dir} has no *.safetensors weights{hint}")
    hashed = weights + [p for p in (local_dir / "tokenizer.json", local_dir / "config.json") if p.exists()]
    return ModelSource(model, local_dir, resolved_revision, {p.name: sha256(p) for p in hashed})


def _download(repo_id: str, revision: str | None) -> tuple[Path, str | None]:
    from huggingface_hub import HfApi, snapshot_download

    try:
        info = HfApi().model_info(repo_id, revision=revision)
        local = snapshot_download(repo_id, revision=info.sha, allow_patterns=ALLOWED_FILES)
    except Exception as err:  # noqa: BLE001 - every Hub failure ends in the same advice
        raise HubUnreachable(
            f"cannot download {repo_id!r} from the Hugging Face Hub ({type(err).__name__}); "
            f"offline, pass a local copy: MODEL=/path/to/local/dir"
        ) from err
    return Path(local), info.sha


def _check_config(local_dir: Path) -> None:
    config_path = local_dir / "config.json"
    if not config_path.exists():
        raise ModelRejected(f"{local_dir} has no config.json")
    config = json.loads(config_path.read_text())
    architectures = config.get("architectures") or []
    if config.get("model_type") != "xlm-roberta" or EXPECTED_ARCHITECTURE not in architectures:
        raise ModelRejected(
            f"expected an {EXPECTED_ARCHITECTURE} (model_type 'xlm-roberta'), found model_type "
            f"{config.get('model_type')!r} with architectures {architectures}"
        )
    labels = len(config["id2label"]) if "id2label" in config else config.get("num_labels", 2)
    if labels != 1:
        raise ModelRejected(f"expected a cross-encoder with one output label, found {labels}")


def sha256(*paths: Path) -> str:
    """One digest over the files that exist among `paths`, in 1 MiB reads (the fp32 weights are
    2.27 GB): a graph and its `.data` file hash as one artifact."""
    digest = hashlib.sha256()
    for path in paths:
        if path.exists():
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def graph_sha256(graph: Path) -> str:
    """The served ONNX graph with its external weights, if any."""
    return sha256(graph, graph.with_name(graph.name + ".data"))


def load_torch_model(source: ModelSource):
    """The fp32 PyTorch reference model, from safetensors, without remote code."""
    from transformers import XLMRobertaForSequenceClassification

    model = XLMRobertaForSequenceClassification.from_pretrained(
        source.local_dir, use_safetensors=True, trust_remote_code=False, dtype="float32"
    )
    return model.eval()


def load_tokenizer(source: ModelSource):
    """The fast tokenizer; from its tokenizer.json or converted from sentencepiece."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        source.local_dir, use_fast=True, trust_remote_code=False, use_safetensors=True
    )
    if not tokenizer.is_fast:
        raise ModelRejected("a fast (tokenizers) tokenizer is required")
    return tokenizer
