"""torch.optim.AdamW on given gradients.

Reads JSON on stdin: {params: [{shape, data}], grads: [[data per param] per
step], lrs: [lr per step], beta1, beta2, eps, weightDecay} and prints a JSON
list, per step, of every parameter's values after that step. Weight decay
applies to matrices only (ndim >= 2): two param groups.
"""

import json
import sys

import torch

req = json.load(sys.stdin)
params = [torch.tensor(p["data"], dtype=torch.float32).reshape(p["shape"]) for p in req["params"]]
for p in params:
    p.requires_grad_(True)
groups = [
    {"params": [p for p in params if p.ndim >= 2], "weight_decay": req["weightDecay"]},
    {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
]
opt = torch.optim.AdamW(groups, lr=req["lrs"][0], betas=(req["beta1"], req["beta2"]), eps=req["eps"])
out = []
for grads, lr in zip(req["grads"], req["lrs"]):
    for g in opt.param_groups:
        g["lr"] = lr
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g, dtype=torch.float32).reshape(p.shape)
    opt.step()
    out.append([p.detach().reshape(-1).tolist() for p in params])
print(json.dumps(out))
