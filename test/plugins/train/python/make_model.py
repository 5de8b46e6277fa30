"""
Saves a tiny random-init causal LM made by transformers' own config and model
classes: `python make_model.py FAMILY DIR`. FAMILY is qwen2 (attention
biases, tied embeddings) or llama3 (llama3 RoPE scaling, untied head).
"""
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

family, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=96, max_position_embeddings=256)
if family == "qwen2":
    model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True, bos_token_id=1, eos_token_id=[2, 3]))
elif family == "llama3":
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False, rope_parameters=rope, bos_token_id=1, eos_token_id=2))
else:
    raise SystemExit(f"unknown family {family}")
model.save_pretrained(out)
