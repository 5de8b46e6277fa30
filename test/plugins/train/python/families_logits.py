"""
Logits transformers and peft give for a list of requests, in one process
(importing transformers costs seconds). Request on stdin:

  [{"base": DIR, "ids": [...], "adapter": DIR}      PeftModel.from_pretrained on the base
   {"model": DIR, "ids": [...]}]                    AutoModelForCausalLM.from_pretrained

JSON list on stdout, one entry per request: the logits [seq * vocab], the
loaded model's class and model_type.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM

out = []
with torch.no_grad():
    for req in json.load(sys.stdin):
        ids = torch.tensor([req["ids"]])
        if "adapter" in req:
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(req["base"], dtype=torch.float32, local_files_only=True)
            model = PeftModel.from_pretrained(base, req["adapter"], local_files_only=True).eval()
            inner = model.get_base_model()
        else:
            model = AutoModelForCausalLM.from_pretrained(req["model"], dtype=torch.float32, local_files_only=True).eval()
            inner = model
        out.append({
            "logits": model(input_ids=ids).logits[0].flatten().tolist(),
            "class": type(inner).__name__,
            "type": inner.config.model_type,
        })
json.dump(out, sys.stdout)
