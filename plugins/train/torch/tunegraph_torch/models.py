"""
Loading a base for training or inference: anything AutoModelForCausalLM
loads from a local directory (tunegraph hands llama2.c checkpoints over
already converted to a Hugging Face directory), in the precision the device
supports, with LoRA from peft and, for QLoRA, an NF4 base (bitsandbytes on
CUDA, nf4.py on the CPU).
"""
import contextlib

import torch


def pick_precision(requested, device):
    if requested in ("float32", "fp32"):
        return torch.float32
    if requested in ("bfloat16", "bf16"):
        if device == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("precision bfloat16: this GPU does not support bf16")
        return torch.bfloat16
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def autocast(device, dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=dtype)


def has_bitsandbytes():
    try:
        import bitsandbytes  # noqa: F401

        return True
    except Exception:
        return False


def load_causal_lm(path, device, kind, compute_dtype, trainable=True):
    from transformers import AutoModelForCausalLM

    kwargs = {"local_files_only": True, "attn_implementation": "sdpa"}
    if kind == "qlora" and device == "cuda" and has_bitsandbytes():
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
        kwargs["device_map"] = {"": torch.cuda.current_device()}
        kwargs["dtype"] = compute_dtype
    elif kind == "full":
        # Master weights stay float32; bf16 is the autocast compute type.
        kwargs["dtype"] = torch.float32
    else:
        kwargs["dtype"] = compute_dtype if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if "device_map" not in kwargs:
        model.to(device)
    model.config.use_cache = not trainable
    return model


def base_weight_bytes(model):
    """(resident bytes, float32 bytes) of the frozen base: every parameter and buffer that is not LoRA's."""
    from .nf4 import Nf4Linear

    resident = 0
    float32 = 0
    seen = set()
    for module in model.modules():
        if isinstance(module, Nf4Linear):
            resident += module.resident_bytes()
            float32 += module.in_features * module.out_features * 4
            seen.update(id(t) for t in (module.weight, module.absmax_codes, module.absmax_scales))
        quant_state = getattr(getattr(module, "weight", None), "quant_state", None)
        if quant_state is not None:
            # bitsandbytes Linear4bit: packed codes plus the (double-quantised) absmax.
            w = module.weight
            resident += w.numel() * w.element_size()
            for t in (getattr(quant_state, "absmax", None), getattr(getattr(quant_state, "state2", None), "absmax", None)):
                if t is not None:
                    resident += t.numel() * t.element_size()
            float32 += module.in_features * module.out_features * 4
            seen.add(id(w))
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if id(p) in seen or "lora_" in name or "inv_freq" in name:
            continue
        seen.add(id(p))
        resident += p.numel() * p.element_size()
        float32 += p.numel() * 4
    return resident, float32


def attach_lora(model, kind, lora, seed, gradient_checkpointing, init=None):
    from peft import LoraConfig, get_peft_model

    if kind == "qlora":
        if getattr(model, "is_loaded_in_4bit", False):
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        else:
            from .nf4 import quantize_projections

            quantize_projections(model)
    # PEFT's initialisation (A Kaiming-uniform, B zero) draws from torch's generator.
    torch.manual_seed(seed)
    config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=list(lora["targets"]),
        use_rslora=lora["rslora"],
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    if init is not None:
        load_init_adapter(model, init, lora)
    return model


def load_init_adapter(model, init, lora):
    """Starts LoRA A/B from an earlier adapter (sequential fine-tuning): same rank, targets within the step's."""
    import json
    import os

    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    with open(os.path.join(init, "adapter_config.json")) as f:
        cfg = json.load(f)
    if cfg.get("r") != lora["r"]:
        raise ValueError(f"init adapter has r={cfg.get('r')}; this step trains r={lora['r']}: set r to match")
    extra = sorted(set(cfg.get("target_modules") or []) - set(lora["targets"]))
    if extra:
        raise ValueError(f"init adapter adapts {', '.join(extra)}, which this step does not train")
    state = load_file(os.path.join(init, "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, state)
    missing = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if missing:
        raise ValueError(f"init adapter tensors the model has no place for: {', '.join(missing[:3])}")
