"""Issue 13 measurements (printed, not asserted): tokenizer cost of 256 KiB passages against a
max_length one, bounded and whole-text tokenization, and what one large direct gRPC request
does to the local server.

    python -m benchmarks.trust_boundary [--direct-mib 256]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from common import adversarial_texts


def _status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # MiB
    return float("nan")


def _best(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


class _TimedTokenizer:
    """The `tokenizers` object, counting the characters handed to it and the time it takes."""

    def __init__(self, inner) -> None:
        self.inner, self.characters, self.seconds = inner, 0, 0.0

    def encode_batch(self, texts, **kwargs):
        start = time.perf_counter()
        out = self.inner.encode_batch(texts, **kwargs)
        self.seconds += time.perf_counter() - start
        self.characters += sum(len(t) for t in texts)
        return out


def passage_kinds(tokenizer, calibration_texts) -> list[tuple[str, str]]:
    """(name, text): a passage of exactly max_length tokens, then 256 KiB ones. A word with no
    space and no forced boundary (base64's shape: every position inside a piece) is read up to a
    coalesced cut. Worst cases: a run whose first tokens depend on its length (a character whose
    double is a piece: ties), and characters the vocabulary lacks (one fused token)."""
    spaced = calibration_texts.long_passage(4000)
    spaced = spaced.encode()[: 256 * 1024 - 64].decode("utf-8", "ignore")
    cjk = (
        ("東京は日本の首都です。人口は約千四百万人です。" * 5000).encode()[: 256 * 1024 - 64].decode("utf-8", "ignore")
    )
    offsets = tokenizer.tokenizer.encode(spaced, add_special_tokens=False).offsets
    exact = spaced[: offsets[tokenizer.max_length - 1][1]]  # max_length tokens, no more
    cuts = tokenizer.cuts
    doubled = adversarial_texts.doubled_character(cuts)
    unknown = next(c for c in "龘鬱齉" if c not in cuts.pieces)
    return [
        (f"max_length tokens ({len(exact.encode()) / 1024:.1f} KiB)", exact),
        ("256 KiB, spaced", spaced),
        ("256 KiB, CJK no spaces", cjk),
        ("256 KiB glued word", adversarial_texts.glued_word(cuts, random.Random(3), 256 * 1024 - 64)),
        (f"256 KiB of {doubled!r}: ties", (doubled * 262144)[: 256 * 1024 - 64]),
        (
            "256 KiB of a character not in vocab",
            (unknown * 90000).encode()[: 256 * 1024 - 64].decode("utf-8", "ignore"),
        ),
    ]


def tokenizer_costs(tokenizer, kinds) -> None:
    """64 passages per request, as bytes (as the server receives them). Columns: the whole request
    (validation, UTF-8 decoding, tokenization, padding), the part spent inside the tokenizer, the
    characters handed to it, and the old way (every text tokenized whole)."""
    inner = tokenizer.tokenizer
    print(
        f"{'64 passages of':<34} {'request':>9} {'in tokenizer':>13} {'chars tokenized':>16} "
        f"{'whole-text tokenization (before)':>33}"
    )
    for name, text in kinds:
        passages = [f"{i} {text}".encode() for i in range(64)]
        queries = [b"Wie hoch ist der Mount Everest?"] * 64
        runs = []  # (request seconds, tokenizer seconds, characters), best of 3
        for _ in range(3):
            timed = _TimedTokenizer(inner)
            tokenizer.tokenizer = timed
            try:
                start = time.perf_counter()
                tokenizer.tokenize_request(queries, passages)
                runs.append((time.perf_counter() - start, timed.seconds, timed.characters))
            finally:
                tokenizer.tokenizer = inner
        request, in_tokenizer, characters = min(runs)
        texts = [t.decode() for t in queries + passages]
        whole = _best(lambda t=texts: inner.encode_batch(t, add_special_tokens=False), repeat=1)
        print(
            f"{name:<34} {request * 1000:>6.1f} ms {in_tokenizer * 1000:>10.1f} ms "
            f"{characters:>16,} {whole * 1000:>30.1f} ms"
        )


def direct_tokenizer(server, kinds) -> None:
    """Each kind as 64 distinct passages in one direct gRPC request to the served `tokenizer`."""
    import tritonclient.grpc as grpcclient

    from common.raw_rerank import rerank_inputs

    client = grpcclient.InferenceServerClient(server.grpc_url)
    for name, text in kinds:
        passages = [f"{i} {text}".encode() for i in range(64)]
        inputs = rerank_inputs(["Wie hoch ist der Mount Everest?"] * 64, passages, grpcclient)
        start = time.perf_counter()
        client.infer("tokenizer", inputs, client_timeout=300)
        print(f"direct gRPC tokenizer request, 64 x {name}: answered in {time.perf_counter() - start:.2f} s")


def direct_request(server, mib: int) -> None:
    import tritonclient.grpc as grpcclient

    columns = mib * (1 << 20) // (2 * 8 * 64)  # two int64 tensors of [64, columns]
    ids = np.full((64, columns), 5, dtype=np.int64)
    mask = np.ones_like(ids)
    pid = server.process.pid
    before = _status(pid, "VmRSS")
    inputs = [
        grpcclient.InferInput("input_ids", list(ids.shape), "INT64"),
        grpcclient.InferInput("attention_mask", list(mask.shape), "INT64"),
    ]
    inputs[0].set_data_from_numpy(ids)
    inputs[1].set_data_from_numpy(mask)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    start = time.perf_counter()
    try:
        client.infer("cross_encoder", inputs, client_timeout=300)
        answer = "accepted"
    except Exception as err:  # noqa: BLE001 - the refusal is what we measure
        answer = str(err)[:160]
    elapsed = time.perf_counter() - start
    time.sleep(1)
    print(
        f"direct gRPC cross_encoder request of {2 * ids.nbytes / 2**20:.0f} MiB [64, {columns}] x 2: "
        f"answered in {elapsed:.2f} s: {answer}"
    )
    print(
        f"tritonserver RSS before {before:.0f} MiB, after {_status(pid, 'VmRSS'):.0f} MiB, "
        f"peak (VmHWM) {_status(pid, 'VmHWM'):.0f} MiB; ready after: {server.is_ready()}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--direct-mib", type=int, default=256)
    args = parser.parse_args(argv)
    from common import calibration_texts, standin_model
    from common.pair_tokenizer import load_pair_tokenizer
    from export.__main__ import main as export_main
    from export.settings import ServingLimits
    from local_triton.server import TritonServer, free_port

    with tempfile.TemporaryDirectory() as tmp:
        model = standin_model.build(Path(tmp) / "tiny", "tiny")
        tokenizer = load_pair_tokenizer(model, ServingLimits())
        kinds = passage_kinds(tokenizer, calibration_texts)
        tokenizer_costs(tokenizer, kinds)
        repo = Path(tmp) / "repo"
        assert (
            export_main(["--model", str(model), "--repo", str(repo), "--backend", "python", "--precision", "fp32"]) == 0
        )
        server = TritonServer(repo, free_port(), free_port(), free_port(), log_path=Path(tmp) / "log").start(240)
        try:
            direct_tokenizer(server, kinds)
            direct_request(server, args.direct_mib)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
