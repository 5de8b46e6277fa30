"""
Tiny random-init causal LMs made by transformers' own config and model
classes, saved with `save_pretrained`:

  python make_model.py FAMILY DIR [--dtype float32|bfloat16|float16] [--max-shard-size 20KB]
  python make_model.py --all ROOT [--dtype ...] [--max-shard-size ...]

FAMILY is one of
  llama3   Llama 3.x: llama3 RoPE scaling, untied head, a list of EOS ids
  qwen2    Qwen2.5: q/k/v biases, tied embeddings
  qwen3    Qwen3: per-head q/k RMSNorm, head_dim 16 != hidden/heads 8, attention_bias (o biased too)
  mistral  Mistral: sliding_window 16, untied head
  smollm2  SmolLM2: plain llama, tied embeddings, one key/value head per four queries

Weights are drawn large enough (std 0.2), and biases and norm weights away
from 0 and 1, that a term a decoder leaves out changes the logits.

With --all, every family goes to ROOT/FAMILY (and Qwen3 as bfloat16 shards
to ROOT/qwen3-bf16-sharded), and ROOT/reference.json holds
what transformers computes on each (float32): the logits of IDS, RoPE's
inv_freq, the mean next-token loss, and its gradient by the layer-0 biases,
norms and q_proj weight.
"""
import argparse
import json
import os

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

FAMILIES = ["llama3", "qwen2", "qwen3", "mistral", "smollm2"]
IDS = [1, 17, 42, 5, 88, 63, 9, 31, 77, 2, 54, 20, 66, 3]
common = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=96,
    max_position_embeddings=256,
    bos_token_id=1,
    rms_norm_eps=1e-5,
)


def build(family):
    if family == "llama3":
        # original_max_position_embeddings 256: with head size 8 the four frequencies fall in all
        # three of llama3's bands (kept, interpolated, divided by factor).
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 256}
        return LlamaForCausalLM(LlamaConfig(**{**common, "max_position_embeddings": 1024}, tie_word_embeddings=False, rope_parameters=rope, eos_token_id=[2, 3]))
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True, eos_token_id=2))
    if family == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(**common, head_dim=16, attention_bias=True, tie_word_embeddings=True, eos_token_id=[2, 3]))
    if family == "mistral":
        return MistralForCausalLM(MistralConfig(**common, sliding_window=16, tie_word_embeddings=False, eos_token_id=2))
    if family == "smollm2":
        return LlamaForCausalLM(LlamaConfig(**{**common, "num_key_value_heads": 1}, rope_theta=100000.0, tie_word_embeddings=True, eos_token_id=2))
    raise SystemExit(f"unknown family {family}: use one of {', '.join(FAMILIES)}")


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name:
                p.copy_(1 + 0.3 * noise)
            elif name.endswith("bias"):
                p.copy_(0.3 * noise)
            else:
                p.copy_(0.2 * noise)


def reference(model):
    ids = torch.tensor([IDS])
    out = model(input_ids=ids)
    logits = out.logits[0]
    loss = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:])
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        layer0 = name.startswith("model.layers.0.")
        if layer0 and ("norm" in name or name.endswith("bias") or name.endswith("q_proj.weight")):
            grads[name] = p.grad.flatten().tolist()
    return {
        "ids": IDS,
        "logits": logits.detach().flatten().tolist(),
        "invFreq": model.model.rotary_emb.inv_freq.tolist(),
        "loss": loss.item(),
        "grads": grads,
    }


def save(model, out, dtype, shard):
    kwargs = {} if shard is None else {"max_shard_size": shard}
    model.to(getattr(torch, dtype)).save_pretrained(out, **kwargs)


parser = argparse.ArgumentParser()
parser.add_argument("family", nargs="?")
parser.add_argument("out")
parser.add_argument("--all", action="store_true")
parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
parser.add_argument("--max-shard-size", default=None)
args = parser.parse_args()

if args.all:
    ref = {}
    for i, family in enumerate(FAMILIES):
        torch.manual_seed(i)
        model = build(family)
        randomize(model, 100 + i)
        ref[family] = reference(model)
        save(model, os.path.join(args.out, family), args.dtype, args.max_shard_size)
        if family == "qwen3":
            # The same weights as a hub checkpoint often ships: bfloat16, in shards.
            save(model, os.path.join(args.out, "qwen3-bf16-sharded"), "bfloat16", "20KB")
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(ref, f)
else:
    torch.manual_seed(0)
    model = build(args.family)
    randomize(model, 100)
    save(model, args.out, args.dtype, args.max_shard_size)
