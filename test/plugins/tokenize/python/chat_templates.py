"""
Builds a small model directory per family (GPT-2's byte-level BPE plus the
family's real special tokens, saved by transformers itself) and renders and
tokenizes conversations with apply_chat_template, the reference the
chat_template tests compare with.

stdin: {"gpt2": tokenizer.json, "templates": dir of *.jinja, "root": output dir, "cases": [...]}
stdout: {"now": iso time of the renders, "families": {name: {"dir", "cases": [...]}}}
"""
import json
import os
import sys
from datetime import datetime

from tokenizers import AddedToken, Tokenizer
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer, PreTrainedTokenizerFast

req = json.load(sys.stdin)

FAMILIES = {
    # Llama 3.2 Instruct: BOS written by the template and by the post-processor; eos_token <|eot_id|>, three EOS ids.
    "llama3": {
        "template": "llama-3.2-instruct.jinja",
        "special": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"],
        "tokens": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        "bos_processor": "<|begin_of_text|>",
        "eos_ids": ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"],
        "where": "config",
    },
    # Llama 3.1 / 3.3 Instruct: the same tokens; the template's date is fixed unless date_string is given.
    "llama3.3": {
        "template": "llama-3.3-instruct.jinja",
        "special": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"],
        "tokens": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        "bos_processor": "<|begin_of_text|>",
        "eos_ids": ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"],
        "where": "jinja",
    },
    "qwen2.5": {
        "template": "qwen2.5-instruct.jinja",
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "tokens": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        "eos_ids": ["<|im_end|>", "<|endoftext|>"],
        "where": "config",
    },
    # Qwen3 as transformers 5 saves it: the template in chat_template.jinja.
    "qwen3": {
        "template": "qwen3.jinja",
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "plain": ["<think>", "</think>"],
        "tokens": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        "eos_ids": ["<|im_end|>", "<|endoftext|>"],
        "where": "jinja",
    },
    # Mistral v0.3: the template writes <s>; the tokenizer adds BOS too (add_bos_token), so only one must remain.
    "mistral": {
        "template": "mistral-7b-instruct-v0.3.jinja",
        "special": ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"],
        "tokens": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
        "bos_processor": "<s>",
        "add_bos_token": True,
        "where": "config",
        "added_token_objects": True,
    },
    "smollm2": {
        "template": "smollm2-instruct.jinja",
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "tokens": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>"},
        "where": "config",
    },
}

out = {"families": {}}
for name, f in FAMILIES.items():
    d = os.path.join(req["root"], name)
    os.makedirs(d, exist_ok=True)
    tok = Tokenizer.from_file(req["gpt2"])
    tok.no_truncation()
    tok.no_padding()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in f["special"]])
    if "plain" in f:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in f["plain"]])
    if "bos_processor" in f:
        b = f["bos_processor"]
        tok.post_processor = TemplateProcessing(
            single=f"{b} $A", pair=f"{b} $A {b} $B", special_tokens=[(b, tok.token_to_id(b))]
        )
    template = open(os.path.join(req["templates"], f["template"]), encoding="utf-8").read()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template, **f["tokens"])
    fast.save_pretrained(d)
    cfg_file = os.path.join(d, "tokenizer_config.json")
    cfg = json.load(open(cfg_file))
    jinja_file = os.path.join(d, "chat_template.jinja")
    if f["where"] == "config":
        # As most hub repositories ship it: the template inside tokenizer_config.json.
        cfg["chat_template"] = open(jinja_file, encoding="utf-8").read()
        os.remove(jinja_file)
    if f.get("add_bos_token"):
        cfg["add_bos_token"] = True
        cfg["add_eos_token"] = False
    if f.get("added_token_objects"):
        for k, v in f["tokens"].items():
            cfg[k] = {"content": v, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "__type": "AddedToken"}
    json.dump(cfg, open(cfg_file, "w"), indent=2)
    if "eos_ids" in f:
        ids = [tok.token_to_id(t) for t in f["eos_ids"]]
        json.dump({"eos_token_id": ids if len(ids) > 1 else ids[0], "bos_token_id": tok.token_to_id(f["tokens"].get("bos_token", f["eos_ids"][0]))},
                  open(os.path.join(d, "generation_config.json"), "w"), indent=2)

    ref = AutoTokenizer.from_pretrained(d, local_files_only=True)
    assert ref.chat_template == template, f"{name}: the saved template differs from the fixture"
    cases = []
    for case in req["cases"]:
        if case.get("families") is not None and name not in case["families"]:
            continue
        msgs = case["messages"]
        kw = case.get("kwargs", {})
        prompt_msgs = msgs[:-1] if msgs[-1]["role"] == "assistant" else msgs

        def both(messages, gen):
            text = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, **kw)
            ids = ref.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen, return_dict=False, **kw)
            return {"text": text, "ids": list(ids)}

        cases.append({"name": case["name"], "messages": msgs, "kwargs": kw, "full": both(msgs, False), "prompt": both(prompt_msgs, True)})
    out["families"][name] = {
        "dir": d,
        "cases": cases,
        "eos": [ref.convert_tokens_to_ids(t) for t in f.get("eos_ids", [f["tokens"]["eos_token"]])],
        "eos_tokens": f.get("eos_ids", [f["tokens"]["eos_token"]]),
        "bos_id": ref.bos_token_id,
        "adds_bos": ref("x")["input_ids"][0] == ref.bos_token_id if ref.bos_token_id is not None else False,
    }
out["now"] = datetime.now().isoformat()
print(json.dumps(out))
