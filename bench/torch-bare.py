#!/usr/bin/env python3
"""
The reference for bench/train.ts's torch rows: a bare PyTorch training loop
over the same Hugging Face directory and the same random tokens, with none
of tunegraph around it. transformers loads the model (sdpa attention), peft
attaches LoRA (r 8, alpha 16, dropout 0, q/k/v/o by default) and
torch.optim.AdamW steps it; each step is forward with the labels, backward,
clip to norm 1, optimizer step. Precision as the torch backend picks it:
float32 on the CPU; on CUDA bfloat16 autocast, with a bfloat16 base under
LoRA and float32 master weights for full fine-tuning.

    python3 bench/torch-bare.py --model DIR --tokens DIR --kind lora \
        [--steps 6] [--seq 128] [--batch 8] [--threads 2] [--device cpu|cuda] [--rank 8]

One JSON object per line on stdout: {"step", "tokens_per_s"} for each step,
then {"median_tokens_per_s" (steps after the first), "note", "peak_memory_bytes"}.
qlora trains plain LoRA here (no bitsandbytes on the CPU, and the worker's
own NF4 is tunegraph's code): the note says so.
"""
import argparse
import json
import os
import sys
import time

# As the torch worker runs (plugins/train/torch/Worker.ts workerEnv): spinning OpenMP threads slow two cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def read_tokens(directory):
    """tokens.u32 and offsets.u32 of a Tokens directory, flat or sharded into the parts meta.json
    lists (joined in that order, offsets rebased to global positions)."""
    with open(os.path.join(directory, "meta.json"), encoding="utf-8") as fh:
        parts = json.load(fh).get("parts")
    ids, offsets, base = [], [np.zeros(1, dtype=np.int64)], 0
    for d in [directory] if parts is None else [os.path.join(directory, p["dir"]) for p in parts]:
        ids.append(np.fromfile(os.path.join(d, "tokens.u32"), dtype="<u4").astype(np.int64))
        offsets.append(np.fromfile(os.path.join(d, "offsets.u32"), dtype="<u4").astype(np.int64)[1:] + base)
        base += len(ids[-1])
    return (np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)), np.concatenate(offsets)


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--model", required=True)
    a.add_argument("--tokens", required=True, help="a Tokens directory (tokens.u32, offsets.u32)")
    a.add_argument("--kind", choices=("full", "lora", "qlora"), required=True)
    a.add_argument("--steps", type=int, default=6)
    a.add_argument("--seq", type=int, default=128)
    a.add_argument("--batch", type=int, default=8)
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    a.add_argument("--rank", type=int, default=8)
    a.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj")
    args = a.parse_args()

    def say(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    from transformers import AutoModelForCausalLM

    device = args.device
    if device == "cpu":
        torch.set_num_threads(args.threads)
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    compute = torch.bfloat16 if bf16 else torch.float32
    full = args.kind == "full"
    model = AutoModelForCausalLM.from_pretrained(
        args.model,
        dtype=torch.float32 if full or not bf16 else compute,
        attn_implementation="sdpa",
        local_files_only=True,
    ).to(device)
    model.config.use_cache = False
    if full:
        lr, decay = 3e-4, 0.01
    else:
        from peft import LoraConfig, get_peft_model

        for t in model.parameters():
            t.requires_grad_(False)
        torch.manual_seed(0)
        model = get_peft_model(
            model,
            LoraConfig(
                r=args.rank,
                lora_alpha=2 * args.rank,
                lora_dropout=0.0,
                target_modules=args.targets.split(","),
                bias="none",
                task_type="CAUSAL_LM",
            ),
        )
        lr, decay = 1e-3, 0.0
    model.train()
    params = [t for t in model.parameters() if t.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=decay, fused=device == "cuda")

    ids, offsets = read_tokens(args.tokens)
    seqs = [ids[offsets[i] : offsets[i] + args.seq] for i in range(len(offsets) - 1)]
    seqs = [s for s in seqs if len(s) == args.seq]
    if len(seqs) < args.batch:
        raise SystemExit(f"{args.tokens}: fewer than {args.batch} sequences of {args.seq} tokens")
    batches = [
        torch.from_numpy(np.stack([seqs[(k * args.batch + j) % len(seqs)] for j in range(args.batch)])).to(device)
        for k in range(max(1, len(seqs) // args.batch))
    ]
    cast = torch.autocast(device_type=device, dtype=compute) if bf16 else torch.autocast(device, enabled=False)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    speeds = []
    for step in range(args.steps):
        x = batches[step % len(batches)]
        started = time.perf_counter()
        with cast:
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        speed = x.numel() / (time.perf_counter() - started)
        speeds.append(speed)
        say({"step": step + 1, "tokens_per_s": speed})
    rest = sorted(speeds[1:])
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    say(
        {
            "median_tokens_per_s": rest[len(rest) // 2] if rest else 0.0,
            "peak_memory_bytes": peak,
            "precision": "bfloat16 autocast" if bf16 else "float32",
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "note": "plain LoRA on a float base (no bitsandbytes NF4)" if args.kind == "qlora" else "",
        }
    )


if __name__ == "__main__":
    main()
