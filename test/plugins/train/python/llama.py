"""Logits and gradients of a Hugging Face Llama, as transformers and peft compute them.

Reads JSON on stdin: one request or a list of them. A request is
  {model: dir, attn: "eager" | "sdpa", batch: B, seq: S, ids: [B*S],
   targets: [B*S] (position t predicts targets[t]; -1 is ignored),
   segments?: [B*S], positions?: [B*S] (a packed batch),
   lora?: {r, alpha, rslora, targets: [module], file: safetensors with
           base_model.model.<module path>.lora_{A,B}.default.weight},
   out: safetensors path to write}
and writes to `out`: logits [B*S, V], loss [1] (the mean over targets), and
grad.<parameter name> for every trainable parameter (every weight without
lora; lora_A and lora_B only with it). A packed batch attends within each
example: a 4D block-diagonal causal mask [B, 1, S, S] (boolean for sdpa,
additive for eager) and the given position_ids.
"""

import json
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

torch.manual_seed(0)


def base(directory, attn):
    return LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation=attn)


def run(req):
    model = base(req["model"], req["attn"])
    lora = req.get("lora")
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            target_modules=lora["targets"],
            lora_dropout=0.0,
            use_rslora=lora["rslora"],
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, cfg)
        given = load_file(lora["file"])
        params = dict(model.named_parameters())
        lora_params = {n for n in params if ".lora_" in n}
        if set(given) != lora_params:
            raise ValueError(f"LoRA tensors {sorted(given)} differ from the model's {sorted(lora_params)}")
        with torch.no_grad():
            for name, value in given.items():
                params[name].copy_(value)
    model.eval()
    B, S = req["batch"], req["seq"]
    ids = torch.tensor(req["ids"], dtype=torch.long).reshape(B, S)
    targets = torch.tensor(req["targets"], dtype=torch.long).reshape(-1)
    kwargs = {}
    if req.get("segments") is not None:
        seg = torch.tensor(req["segments"]).reshape(B, S)
        causal = torch.ones(S, S, dtype=torch.bool).tril()
        allowed = (seg[:, :, None] == seg[:, None, :]) & causal
        mask = allowed[:, None, :, :]
        if req["attn"] == "eager":
            mask = torch.zeros(mask.shape, dtype=torch.float32).masked_fill(~mask, torch.finfo(torch.float32).min)
        kwargs["attention_mask"] = mask
        kwargs["position_ids"] = torch.tensor(req["positions"], dtype=torch.long).reshape(B, S)
    logits = model(input_ids=ids, **kwargs).logits.reshape(B * S, -1)
    count = int((targets >= 0).sum())
    loss = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-1, reduction="sum") / count
    loss.backward()
    out = {"logits": logits.detach().contiguous(), "loss": loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            if p.grad is None:
                raise ValueError(f"{name} has no gradient")
            out[f"grad.{name}"] = p.grad.detach().contiguous()
    save_file(out, req["out"])


req = json.load(sys.stdin)
for r in req if isinstance(req, list) else [req]:
    run(r)
print(json.dumps({"ok": True}))
