"""The learning rate transformers' schedulers give each optimizer step.

Reads a JSON list of cases on stdin, each {lr, minLr, warmupSteps, totalSteps,
schedule}, and prints a JSON list of rate lists: for every step 0..total-1,
optimizer.param_groups[0]["lr"] before that step, which is the rate a
transformers Trainer uses for it.
"""

import json
import sys

import torch
from transformers import optimization as opt


def rates(case):
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=case["lr"])
    warm, total, min_lr = case["warmupSteps"], case["totalSteps"], case["minLr"]
    kind = case["schedule"]
    if kind == "cosine" and min_lr > 0:
        scheduler = opt.get_cosine_with_min_lr_schedule_with_warmup(optimizer, warm, total, min_lr=min_lr)
    elif kind == "cosine":
        scheduler = opt.get_cosine_schedule_with_warmup(optimizer, warm, total)
    elif kind == "linear":
        if min_lr > 0:
            raise ValueError("transformers' linear schedule decays to 0 only")
        scheduler = opt.get_linear_schedule_with_warmup(optimizer, warm, total)
    elif kind == "constant":
        scheduler = opt.get_constant_schedule_with_warmup(optimizer, warm)
    else:
        raise ValueError(f"unknown schedule {kind}")
    out = []
    for _ in range(total):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


print(json.dumps([rates(c) for c in json.load(sys.stdin)]))
