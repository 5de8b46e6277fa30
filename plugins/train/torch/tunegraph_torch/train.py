"""
The torch trainer: the same loop, parameters, metrics and checkpoints as
plugins/train/Trainer.ts. Batch, forward, loss, backward, clip, step,
schedule, log, evaluate, checkpoint. The data order follows from (seed, step)
and the dropout generator is reseeded from (seed, step) before each step, so
a run resumed from a checkpoint on the CPU ends with exactly the weights of
an uninterrupted one.
"""
import json
import math
import os
import shutil
import time

import torch
import torch.nn.functional as F

from . import data as D
from .models import attach_lora, autocast, base_weight_bytes, load_causal_lm, pick_precision

CHECKPOINT = "torch-checkpoint.pt"
BEST = "torch-best.pt"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "chat_template.jinja")


class TrainError(Exception):
    pass


class Interrupted(Exception):
    pass



def keep_base_dtype(base, output):
    """The weights stay float32 (what trained), but config.json keeps the base's dtype, as the
    tfjs trainer's does: a bfloat16 base fine-tuned is still a bfloat16 model, and exports as one."""
    try:
        with open(os.path.join(base, "config.json")) as f:
            base_config = json.load(f)
    except (OSError, ValueError):
        return
    dtype = base_config.get("dtype") or base_config.get("torch_dtype")
    if dtype not in ("float32", "float16", "bfloat16"):
        return
    path = os.path.join(output, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["dtype"] = dtype
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def learning_rate(o, step):
    """As transformers' schedulers give it for optimizer step `step` (0-based); see plugins/train/Schedule.ts."""
    warm = min(o["warmupSteps"], o["totalSteps"])
    if step < warm:
        return o["lr"] * step / max(1, warm)
    if o["schedule"] == "constant":
        return o["lr"]
    span = max(1, o["totalSteps"] - warm)
    progress = min(1.0, (step - warm) / span)
    factor = 0.5 * (1 + math.cos(math.pi * progress)) if o["schedule"] == "cosine" else 1 - progress
    return o["minLr"] + (o["lr"] - o["minLr"]) * factor


def save_atomic(obj, file):
    tmp = f"{file}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, file)


def block_mask(segments):
    """[B, 1, S, S] boolean: causal, and only within one packed example."""
    S = segments.shape[1]
    causal = torch.ones(S, S, dtype=torch.bool, device=segments.device).tril()
    return ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]


def forward_inputs(mb, device):
    kw = {"input_ids": torch.from_numpy(mb.ids).to(device)}
    if mb.segments is not None:
        kw["attention_mask"] = block_mask(torch.from_numpy(mb.segments).to(device))
        kw["position_ids"] = torch.from_numpy(mb.positions).to(device)
    # Unpacked batches are right-padded: under the causal mask no real token sees padding.
    return kw


def loss_sum(model, mb, device, cast):
    with cast:
        logits = model(**forward_inputs(mb, device), use_cache=False).logits
    targets = torch.from_numpy(mb.targets).to(device)
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1, reduction="sum"
    )


def evaluate(model, s, p, device, cast):
    was = model.training
    model.eval()
    total = 0.0
    count = 0
    batches = math.ceil(s.count / p["batchSize"])
    limit = min(batches, p["evalBatches"]) if p["evalBatches"] > 0 else batches
    with torch.no_grad():
        for b in range(limit):
            idx = list(range(b * p["batchSize"], min(s.count, (b + 1) * p["batchSize"])))
            mb = D.make_batch(s, idx, p["maxSeqLen"])
            if mb.target_count == 0:
                continue
            total += loss_sum(model, mb, device, cast).item()
            count += mb.target_count
    model.train(was)
    return float("nan") if count == 0 else total / count


def trainable_state(model):
    return {n: t.detach().to("cpu", copy=True) for n, t in model.named_parameters() if t.requires_grad}


def load_trainable(model, state):
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in state.items():
            if n not in params:
                raise TrainError(f"checkpoint holds {n}, which the model does not have")
            params[n].copy_(t)


def sort_target_modules(file):
    """PEFT writes target_modules from a set, in an order that varies between processes: sort it, for stable bytes."""
    import json

    with open(file, encoding="utf-8") as fh:
        cfg = json.load(fh)
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    with open(file, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(cfg, indent=2, sort_keys=True))


def train(job, out, stop):
    p = job["params"]
    kind = job["kind"]
    device = job["device"]
    if device == "cpu":
        torch.set_num_threads(max(1, int(job.get("threads", 1))))
        torch.use_deterministic_algorithms(True, warn_only=True)
    compute = pick_precision(p.get("precision", "auto"), device)
    cast = autocast(device, compute)
    out.annotate(
        {
            "device": job.get("deviceName", device),
            "precision": str(compute).replace("torch.", ""),
        }
    )
    init = job.get("init")
    # Full fine-tuning continues from the given model's weights instead of the base's.
    model = load_causal_lm(init if kind == "full" and init else job["base"], device, kind, compute)
    if init:
        out.log(f"starts from {'the weights of' if kind == 'full' else 'the adapter'} {os.path.basename(init)}")
    vocab = model.config.vocab_size
    train_set = D.TokenSet(job["train"], vocab)
    val_set = D.TokenSet(job["validation"], vocab) if job.get("validation") else None
    if train_set.count == 0:
        raise TrainError(f"{job['train']}: the training split holds no sequences")
    gc = bool(p.get("gradientCheckpointing", False))
    if kind == "full":
        for t in model.parameters():
            t.requires_grad_(True)
    else:
        for t in model.parameters():
            t.requires_grad_(False)
        model = attach_lora(
            model,
            kind,
            {k: p[k] for k in ("r", "alpha", "dropout", "targets", "rslora")},
            p["seed"],
            gc,
            init,
        )
    if gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()

    resident, float32 = base_weight_bytes(model)
    out.metric("base_weight_bytes", resident, 0)
    out.metric("base_weight_bytes_float32", float32, 0)
    mib = lambda b: f"{b / 1048576:.2f}"
    out.log(
        f"base weights: {mib(resident)} MiB resident{' as NF4' if kind == 'qlora' else ''}, {mib(float32)} MiB as float32 ({100 * resident / float32:.1f}%)"
    )
    named = [(n, t) for n, t in model.named_parameters() if t.requires_grad]
    params = [t for _, t in named]
    out.log(f"{sum(t.numel() for t in params)} trainable parameters in {len(params)} tensors")
    decay = [t for t in params if t.ndim >= 2]
    no_decay = [t for t in params if t.ndim < 2]
    groups = [g for g in ({"params": decay, "weight_decay": p["weightDecay"]}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    optimizer = torch.optim.AdamW(
        groups, lr=p["lr"], betas=(p["beta1"], p["beta2"]), eps=p["eps"], fused=device == "cuda"
    )

    micro_per_step = p["gradAccum"]
    total_steps = (
        p["steps"]
        if p["steps"] > 0
        else max(1, math.ceil(p["epochs"] * train_set.count / (p["batchSize"] * micro_per_step)))
    )
    schedule = {k: p[k] for k in ("lr", "minLr", "warmupSteps", "schedule")}
    schedule["totalSteps"] = total_steps

    ckdir = job["checkpoints"]
    os.makedirs(ckdir, exist_ok=True)
    state = {
        "step": 0,
        "bestValLoss": None,
        "bestStep": None,
        "badEvals": 0,
        "stoppedEarly": False,
        "lastTrainLoss": None,
        "job": job["jobKey"],
    }
    ck_file = os.path.join(ckdir, CHECKPOINT)
    if os.path.exists(ck_file):
        saved = torch.load(ck_file, map_location="cpu", weights_only=False)
        if saved.get("state", {}).get("job") == job["jobKey"]:
            load_trainable(model, saved["params"])
            optimizer.load_state_dict(saved["optimizer"])
            state = saved["state"]
            out.log(f"resumed from the checkpoint at step {state['step']}")
            out.metric("resumed_from", state["step"], state["step"])
    resumed_from = state["step"]

    def checkpoint():
        save_atomic(
            {"params": trainable_state(model), "optimizer": optimizer.state_dict(), "state": dict(state)}, ck_file
        )

    def validate():
        nonlocal state
        val = evaluate(model, val_set, p, device, cast)
        out.metric("val_loss", val, state["step"])
        last = state["lastTrainLoss"]
        out.log(
            f"step {state['step']}: train loss {'-' if last is None else f'{last:.4f}'}, validation loss {val:.4f}"
        )
        if not math.isfinite(val):
            raise TrainError(
                f"validation loss is {val} at step {state['step']} (learning rate {learning_rate(schedule, max(0, state['step'] - 1)):.4g})"
            )
        if state["bestValLoss"] is None or val < state["bestValLoss"] - p["minDelta"]:
            state.update(bestValLoss=val, bestStep=state["step"], badEvals=0)
            save_atomic(trainable_state(model), os.path.join(ckdir, BEST))
            return
        state["badEvals"] += 1
        if p["patience"] > 0 and state["badEvals"] >= p["patience"]:
            state["stoppedEarly"] = True
            out.log(
                f"early stop at step {state['step']}: no improvement in {p['patience']} evaluations (best {state['bestValLoss']:.4f} at step {state['bestStep']})"
            )

    if val_set is not None and state["step"] == 0:
        validate()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    plan = D.BatchPlan(train_set.count, p["batchSize"], p["seed"])
    dropout_seed = D.mix_seed(p["seed"], 0xD409)
    while state["step"] < total_steps and not state["stoppedEarly"]:
        if stop():
            if state["step"] > resumed_from:
                checkpoint()
            raise Interrupted(state["step"])
        step = state["step"]
        started = time.perf_counter()
        lr = learning_rate(schedule, step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        torch.manual_seed(D.mix_seed(dropout_seed, step))
        batches = [D.make_batch(train_set, plan.indices(step * micro_per_step + j), p["maxSeqLen"]) for j in range(micro_per_step)]
        targets = sum(mb.target_count for mb in batches)
        tokens = sum(mb.tokens for mb in batches)
        loss_total = 0.0
        optimizer.zero_grad(set_to_none=True)
        if targets > 0:
            for mb in batches:
                if mb.target_count == 0:
                    continue
                loss = loss_sum(model, mb, device, cast) / targets
                loss.backward()
                loss_total += loss.item()
        if not math.isfinite(loss_total):
            raise TrainError(
                f"training loss is {loss_total} at step {step + 1} (learning rate {lr:.4g}): lower the learning rate or check the data"
            )
        if targets > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, p["clipNorm"] if p["clipNorm"] > 0 else float("inf")).item()
            if not math.isfinite(norm):
                raise TrainError(f"gradient norm is {norm} at step {step + 1} (learning rate {lr:.4g})")
            out.metric("grad_norm", norm, step + 1)
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        state["step"] = step + 1
        if targets > 0:
            state["lastTrainLoss"] = loss_total
        out.metric("train_loss", loss_total, step + 1)
        out.metric("lr", lr, step + 1)
        out.metric("tokens_per_s", tokens / seconds, step + 1)
        out.progress(step + 1, total_steps, f"loss {loss_total:.4f}")
        last = state["step"] == total_steps
        if val_set is not None and ((p["evalEvery"] > 0 and state["step"] % p["evalEvery"] == 0) or last):
            validate()
        if p["checkpointEvery"] > 0 and state["step"] % p["checkpointEvery"] == 0 and not last:
            checkpoint()

    if device == "cuda":
        out.metric("peak_memory_bytes", torch.cuda.max_memory_allocated(), state["step"])
    else:
        import resource

        out.metric("peak_memory_bytes", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, state["step"])

    best_file = os.path.join(ckdir, BEST)
    if p["keepBest"] and state["bestStep"] is not None and state["bestStep"] != state["step"] and os.path.exists(best_file):
        load_trainable(model, torch.load(best_file, map_location="cpu", weights_only=True))
        out.log(f"output: the weights of step {state['bestStep']} (best validation loss {state['bestValLoss']:.4f})")

    os.makedirs(job["output"], exist_ok=True)
    if kind == "full":
        model.config.use_cache = True
        model.save_pretrained(job["output"], safe_serialization=True)
        keep_base_dtype(job["base"], job["output"])
        for f in TOKENIZER_FILES + tuple(x for x in os.listdir(job["base"]) if x.startswith("tok") and x.endswith(".bin")):
            src = os.path.join(job["base"], f)
            if os.path.isfile(src):
                shutil.copyfile(src, os.path.join(job["output"], f))
    else:
        # The base's own name, never a scratch or store path (the model card reads it too).
        model.peft_config["default"].base_model_name_or_path = job["baseName"]
        base = model.get_base_model()
        base.config._name_or_path = job["baseName"]
        base.name_or_path = job["baseName"]
        model.save_pretrained(job["output"])
        sort_target_modules(os.path.join(job["output"], "adapter_config.json"))
    return {
        "steps": state["step"],
        "totalSteps": total_steps,
        "finalTrainLoss": state["lastTrainLoss"],
        "bestValLoss": state["bestValLoss"],
        "bestStep": state["bestStep"],
        "stoppedEarly": state["stoppedEarly"],
        "resumedFrom": resumed_from,
    }
