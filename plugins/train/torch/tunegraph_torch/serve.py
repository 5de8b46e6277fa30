"""
Inference for `tunegraph generate` and the eval step: a loop over requests,
one JSON object a line on stdin, each answered by one JSON line on the
protocol stream, in order. A failed request is answered with
{"error": message, "name": type} and the loop goes on.

    {"op": "load", "id", "path", "adapter"?, "nf4"?, "device", "threads"?}
        a Hugging Face directory; a PEFT adapter merged into it (into the
        NF4 round-tripped base with nf4, as a QLoRA adapter trained);
        bfloat16 on a GPU that supports it, else float32
    {"op": "next", "id", "ids", "reset"?}
        feeds ids after what the model was fed since the last reset (a
        key/value cache per model); the last position's logits as base64
        little-endian float32
    {"op": "greedy", "id", "ids", "maxTokens", "stopIds"}
        greedy decoding from a prompt: the ids after it, stop ids excluded
    {"op": "loss", "id", "tokens", "start"?, "end"?, "maxLen"?}
        plugins/eval/Loss.ts's test loss over sequences [start, end) of a
        Tokens directory: summed NLL, label tokens, truncated pieces
    {"op": "unload", "id"}, {"op": "close"}
"""
import base64
import sys
import traceback

import numpy as np
import torch
import torch.nn.functional as F


class ServeError(Exception):
    pass


class Loaded:
    def __init__(self, model, device):
        self.model = model
        self.device = device
        self.cache = None


def _model(models, req):
    key = req.get("id")
    if key not in models:
        raise ServeError(f"no model loaded as {key!r}")
    return models[key]


def load(models, req):
    from transformers import AutoModelForCausalLM

    from .models import pick_precision
    from .nf4 import nf4_round_trip

    device = req.get("device", "cpu")
    if device not in ("cpu", "cuda"):
        raise ServeError(f"device {device!r}: use cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ServeError("device cuda: torch finds no CUDA device")
    if device == "cpu" and req.get("threads"):
        torch.set_num_threads(max(1, int(req["threads"])))
    dtype = pick_precision("auto", device)
    # Loaded, round-tripped and merged in float32 on the CPU, as the tfjs merge does; then cast and moved.
    model = AutoModelForCausalLM.from_pretrained(
        req["path"], dtype=torch.float32, local_files_only=True, attn_implementation="sdpa"
    )
    if req.get("nf4"):
        nf4_round_trip(model)
    if req.get("adapter"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, req["adapter"], is_trainable=False).merge_and_unload()
    model = model.to(device=device, dtype=dtype)
    model.eval()
    model.config.use_cache = True
    models[req["id"]] = Loaded(model, device)
    return {
        "dtype": str(dtype).replace("torch.", ""),
        "vocabSize": int(model.config.vocab_size),
        "maxSeqLen": int(getattr(model.config, "max_position_embeddings", 2048)),
    }


def _step(m, ids):
    """Feeds ids after the cached ones; the last position's logits, float32 on the CPU."""
    x = torch.tensor([list(ids)], dtype=torch.long, device=m.device)
    out = m.model(input_ids=x, past_key_values=m.cache, use_cache=True)
    m.cache = out.past_key_values
    return out.logits[0, -1].float().cpu()


def next_logits(models, req):
    m = _model(models, req)
    ids = req.get("ids") or []
    if len(ids) == 0:
        raise ServeError("next: no ids to feed")
    if req.get("reset"):
        m.cache = None
    row = _step(m, ids)
    data = row.numpy().astype("<f4", copy=False).tobytes()
    return {"logits": base64.b64encode(data).decode("ascii")}


def greedy(models, req):
    m = _model(models, req)
    prompt = req.get("ids") or []
    if len(prompt) == 0:
        raise ServeError("greedy: the prompt holds no ids")
    stop = set(int(i) for i in req.get("stopIds", []))
    limit = int(req["maxTokens"])
    m.cache = None
    out = []
    try:
        feed = prompt
        while len(out) < limit:
            # torch.argmax, like Generate.ts's argmax, takes the first of equal maxima.
            nxt = int(torch.argmax(_step(m, feed)).item())
            if nxt in stop:
                break
            out.append(nxt)
            feed = [nxt]
    finally:
        m.cache = None
    return {"ids": out}


def _pieces(s, i):
    """Loss.ts's scoredPieces: sequence i, or each packed example of it, as (tokens, labels)."""
    a, b = int(s.offsets[i]), int(s.offsets[i + 1])
    tokens, labels = s.tokens[a:b], s.labels[a:b]
    if s.segments is None:
        return [(tokens, labels)]
    seg = s.segments[a:b]
    out = []
    start = 0
    for t in range(1, len(tokens) + 1):
        if t == len(tokens) or seg[t] != seg[start]:
            out.append((tokens[start:t], labels[start:t]))
            start = t
    return out


def _loss_batch(m, rows):
    """Summed NLL and label count of right-padded rows; under the causal mask no real token sees padding."""
    S = max(len(t) for t, _ in rows)
    ids = np.zeros((len(rows), S), dtype=np.int64)
    targets = np.full((len(rows), S), -1, dtype=np.int64)
    for r, (t, tg) in enumerate(rows):
        ids[r, : len(t)] = t
        targets[r, : len(tg)] = tg
    x = torch.from_numpy(ids).to(m.device)
    y = torch.from_numpy(targets).to(m.device)
    logits = m.model(input_ids=x, use_cache=False).logits
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-1, reduction="sum")
    return float(nll.item())


_token_sets = {}


def _token_set(directory, vocab):
    """The Tokens directory, read once for the loss requests that walk it in chunks."""
    from .data import TokenSet

    key = (directory, vocab)
    if key not in _token_sets:
        _token_sets.clear()
        _token_sets[key] = TokenSet(directory, vocab)
    return _token_sets[key]


def loss(models, req):
    m = _model(models, req)
    vocab = int(m.model.config.vocab_size)
    s = _token_set(req["tokens"], vocab)
    max_len = int(req.get("maxLen") or getattr(m.model.config, "max_position_embeddings", 2048))
    start = int(req.get("start", 0))
    end = min(int(req.get("end", s.count)), s.count)
    nll = 0.0
    count = 0
    truncated = 0
    # Logits of one forward pass stay near 256 MiB as float32.
    budget = max(max_len, (1 << 26) // max(1, vocab))
    batch = []
    width = 0

    def flush():
        nonlocal nll, batch, width
        if batch:
            nll += _loss_batch(m, batch)
        batch = []
        width = 0

    for i in range(start, end):
        for tokens, labels in _pieces(s, i):
            n = min(len(tokens), max_len)
            if n < len(tokens):
                truncated += 1
            if n < 2:
                continue
            # Position t predicts labels[t + 1]; -100 (and any negative label) is not scored.
            nxt = labels[1:n]
            tg = np.where(nxt >= 0, nxt, -1)
            c = int((tg >= 0).sum())
            if c == 0:
                continue
            count += c
            if batch and max(width, n) * (len(batch) + 1) > budget:
                flush()
            batch.append((tokens[:n], tg))
            width = max(width, n)
    flush()
    return {"nll": nll, "tokens": count, "truncated": truncated, "sequences": max(0, end - start)}


def unload(models, req):
    models.pop(req.get("id"), None)
    _token_sets.clear()
    return {}


OPS = {"load": load, "next": next_logits, "greedy": greedy, "loss": loss, "unload": unload}


def serve(stdin, out):
    models = {}
    while True:
        line = stdin.readline()
        if line == "":
            return 0
        line = line.strip()
        if line == "":
            continue
        try:
            import json

            req = json.loads(line)
            op = req.get("op")
            if op == "close":
                out.send({"ok": True})
                return 0
            handler = OPS.get(op)
            if handler is None:
                raise ServeError(f"unknown request {op!r}: use {', '.join([*OPS, 'close'])}")
            with torch.inference_mode():
                result = handler(models, req)
            out.send({"ok": True, **result})
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            out.send({"error": str(e) or type(e).__name__, "name": type(e).__name__})
