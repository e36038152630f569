"""GPU probe (PyTorch only, < 5 minutes): fp16 pairs/s of the real-shape bge-reranker-v2-m3
(24 x 1024, vocab 250002; random weights, same cost) at 128-1024 tokens and batch 1-64 on
whatever GPU is present. This is the number our TensorRT path must beat.

    python scripts/gpu_probe.py [--out gpu_probe.json]
    python scripts/gpu_probe.py --device cpu --layers 1 --hidden 64 --lengths 16,32 --batches 1,2   # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def flops_per_pair(tokens: int, layers: int, hidden: int) -> float:
    return layers * (24 * hidden**2 * tokens + 4 * hidden * tokens**2)


def main(argv: list[str] | None = None) -> int:
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--lengths", default="128,256,512,1024")
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per point")
    parser.add_argument(
        "--peak-tflops", type=float, default=0.0, help="fp16 dense peak for the % column (H100 SXM: 989)"
    )
    parser.add_argument("--out", default="gpu_probe.json")
    args = parser.parse_args(argv)
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    config = XLMRobertaConfig(
        vocab_size=250002,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        intermediate_size=4 * args.hidden,
        max_position_embeddings=8194,
        type_vocab_size=1,
        pad_token_id=1,
        num_labels=1,
    )
    model = XLMRobertaForSequenceClassification(config).to(args.device, dtype).eval()
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    rows = []
    started = time.perf_counter()
    for length in [int(x) for x in args.lengths.split(",")]:
        for batch in [int(x) for x in args.batches.split(",")]:
            ids = torch.randint(5, 250000, (batch, length), device=args.device)
            mask = torch.ones_like(ids)
            try:
                with torch.inference_mode():
                    model(input_ids=ids, attention_mask=mask)  # warm-up
                    sync()
                    runs, start = 0, time.perf_counter()
                    while time.perf_counter() - start < args.seconds:
                        model(input_ids=ids, attention_mask=mask)
                        runs += 1
                    sync()
                    elapsed = time.perf_counter() - start
            except torch.cuda.OutOfMemoryError:
                rows.append({"tokens": length, "batch": batch, "error": "out of memory"})
                continue
            pairs_per_s = runs * batch / elapsed
            tflops = pairs_per_s * flops_per_pair(length, args.layers, args.hidden) / 1e12
            row = {
                "tokens": length,
                "batch": batch,
                "pairs_per_s": round(pairs_per_s, 1),
                "ms_per_batch": round(elapsed / runs * 1e3, 2),
                "tflops": round(tflops, 1),
            }
            if args.peak_tflops:
                row["of_peak"] = round(tflops / args.peak_tflops, 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {
        "device": device_name,
        "dtype": str(dtype),
        "layers": args.layers,
        "hidden": args.hidden,
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)
    print(f"{device_name}: {len(rows)} points in {report['seconds']} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
