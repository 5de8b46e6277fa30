"""
Checkpoints as transformers writes them, for the loading tests: tiny random
Llamas built with transformers' own config and model classes, saved with
`save_pretrained` in a given dtype and shard size, with the float32 logits
a user gets loading them back; and directories loaded with dtype="auto",
reporting the dtype transformers picks, each tensor's dtype on disk, and
the float32 logits. Request on stdin ({ids, save: [...], load: [...]}),
JSON on stdout.
"""
import json
import os
import sys

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

req = json.load(sys.stdin)
ids = torch.tensor(req["ids"], dtype=torch.long)[None]


def logits(d):
    # As a user gets them: loaded in float32 (RoPE's inverse frequencies are recomputed, never saved).
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, local_files_only=True).eval()
    return model(input_ids=ids).logits[0].flatten().tolist()


out = {"save": [], "load": []}
with torch.no_grad():
    for s in req.get("save", []):
        torch.manual_seed(s.get("seed", 0))
        config = LlamaConfig(
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=128,
            max_position_embeddings=64,
            tie_word_embeddings=s.get("tied", False),
            bos_token_id=1,
            eos_token_id=2,
        )
        model = LlamaForCausalLM(config).eval()
        # Larger weights than the 0.02 init, so a wrong conversion shows in the logits.
        for p in model.parameters():
            p.mul_(5.0)
        model = model.to(DTYPES[s["dtype"]])
        model.save_pretrained(s["dir"], **({} if s.get("shard") is None else {"max_shard_size": s["shard"]}))
        out["save"].append({"logits": logits(s["dir"])})
    for d in req.get("load", []):
        model = AutoModelForCausalLM.from_pretrained(d, dtype="auto", local_files_only=True)
        disk = {}
        for f in sorted(os.listdir(d)):
            if f.endswith(".safetensors"):
                with safe_open(os.path.join(d, f), "pt") as st:
                    for k in st.keys():
                        disk[k] = str(st.get_slice(k).get_dtype())
        out["load"].append({"dtype": str(model.dtype).replace("torch.", ""), "disk": disk, "logits": logits(d)})
json.dump(out, sys.stdout)
