#!/usr/bin/env python3
"""
A randomly initialised Llama-3.2-1B-style model for bench/train.ts's llama1b
configuration, made by transformers itself and saved with save_pretrained
(safetensors) in bfloat16: hidden 2048, 16 layers, 32 heads, 8 KV heads,
intermediate 8192, vocabulary 128256, RoPE theta 500000 with llama3 scaling
(factor 32, low 1, high 4, original 8192 positions), tied embeddings; about
1.24B parameters, 2.5 GB on disk.

    python3 bench/make-llama.py OUT_DIR [--tiny]

--tiny keeps everything but the sizes (hidden 64, 2 layers, 4 heads, 2 KV
heads, intermediate 256): a dry run of the same code path on a CPU.
Prints one JSON line: the directory, the parameter count and the config
bench/train.ts computes FLOPs from.
"""
import inspect
import json
import os
import sys

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        sys.stderr.write("usage: make-llama.py OUT_DIR [--tiny]\n")
        return 2
    out = args[0]
    tiny = "--tiny" in sys.argv
    sizes = (
        dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        if tiny
        else dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8)
    )
    rope = {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    common = dict(
        vocab_size=128256,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=128000,
        eos_token_id=128001,
        head_dim=sizes["hidden_size"] // sizes["num_attention_heads"],
        **sizes,
    )
    # transformers 5 holds theta inside rope_parameters; 4.x had rope_theta and rope_scaling.
    if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:
        config = LlamaConfig(rope_parameters={"rope_theta": 500000.0, **rope}, **common)
    else:
        config = LlamaConfig(rope_theta=500000.0, rope_scaling=rope, **common)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Initialised in bfloat16 on the GPU where there is one: seconds, not a minute of CPU.
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.config.use_cache = True
    model.save_pretrained(out, safe_serialization=True)
    n = sum(p.numel() for p in model.parameters())
    sys.stdout.write(
        json.dumps(
            {
                "dir": out,
                "parameters": n,
                "config": {
                    "dim": sizes["hidden_size"],
                    "hiddenDim": sizes["intermediate_size"],
                    "nLayers": sizes["num_hidden_layers"],
                    "nHeads": sizes["num_attention_heads"],
                    "nKvHeads": sizes["num_key_value_heads"],
                    "vocabSize": common["vocab_size"],
                    "tiedEmbeddings": True,
                },
            }
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
