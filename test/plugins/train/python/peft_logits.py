"""
The Hugging Face side of the PEFT interop tests: logits of a base with a PEFT
adapter loaded by `PeftModel.from_pretrained`, of a merged model directory,
and greedy ids from `generate`. Request on stdin, JSON on stdout.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM

req = json.load(sys.stdin)
ids = torch.tensor(req["ids"], dtype=torch.long)[None]
out = {}
with torch.no_grad():
    if "adapter" in req:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(req["base"], dtype=torch.float32, local_files_only=True)
        model = PeftModel.from_pretrained(base, req["adapter"], local_files_only=True).eval()
        out["peft"] = model(input_ids=ids).logits[0].flatten().tolist()
        if req.get("generate"):
            # Greedy decoding written out: argmax of the last position, appended, again.
            cur = ids
            for _ in range(req["generate"]):
                nxt = model(input_ids=cur).logits[0, -1].argmax()
                cur = torch.cat([cur, nxt.view(1, 1)], dim=1)
            out["generated"] = cur[0, ids.shape[1] :].tolist()
    if "merged" in req:
        merged = AutoModelForCausalLM.from_pretrained(req["merged"], dtype=torch.float32, local_files_only=True).eval()
        out["merged"] = merged(input_ids=ids).logits[0].flatten().tolist()
json.dump(out, sys.stdout)
