"""
NF4 4-bit NormalFloat on the CPU, as plugins/train/Nf4.ts holds a QLoRA base:
row-major blocks of 64 values, each with its absmax and a 4-bit index into
the 16 NF4 levels; the absmax values double-quantised (mean subtracted, int8
codes in blocks of 256, a float32 scale each). On CUDA the worker uses
bitsandbytes instead.
"""
import torch
import torch.nn as nn

CODEBOOK = torch.tensor(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    dtype=torch.float32,
)
BLOCK = 64
ABSMAX_BLOCK = 256
_MIDPOINTS = ((CODEBOOK[:-1].double() + CODEBOOK[1:].double()) / 2)


def _f32(x):
    return float(torch.tensor(x, dtype=torch.float32))


def quantize(w):
    """-> (codes uint8 [ceil(n/2)], absmax codes int8, absmax scales float32, mean float)."""
    flat = w.detach().reshape(-1).float().cpu()
    n = flat.numel()
    blocks = (n + BLOCK - 1) // BLOCK
    padded = torch.zeros(blocks * BLOCK, dtype=torch.float32)
    padded[:n] = flat
    grid = padded.view(blocks, BLOCK)
    absmax = grid.abs().amax(dim=1)
    inv = torch.where(absmax == 0, torch.zeros_like(absmax), 1 / absmax.double()).double()
    scaled = (grid.double() * inv[:, None]).reshape(-1)[:n]
    idx = torch.bucketize(scaled, _MIDPOINTS, right=False).to(torch.uint8)
    if n % 2:
        idx = torch.cat([idx, torch.zeros(1, dtype=torch.uint8)])
    codes = (idx[0::2] << 4) | idx[1::2]
    mean = _f32(absmax.double().sum().item() / max(1, blocks))
    groups = (blocks + ABSMAX_BLOCK - 1) // ABSMAX_BLOCK
    absmax_codes = torch.zeros(blocks, dtype=torch.int8)
    scales = torch.zeros(groups, dtype=torch.float32)
    centred = absmax.double() - mean
    for g in range(groups):
        part = centred[g * ABSMAX_BLOCK : (g + 1) * ABSMAX_BLOCK]
        scale = _f32(part.abs().max().item() / 127)
        scales[g] = scale
        if scale != 0:
            # JavaScript's Math.round: halves go up.
            absmax_codes[g * ABSMAX_BLOCK : (g + 1) * ABSMAX_BLOCK] = torch.clamp(
                torch.floor(part / scale + 0.5), -127, 127
            ).to(torch.int8)
    return codes, absmax_codes, scales, mean


def block_absmax(absmax_codes, scales, mean):
    groups = torch.arange(absmax_codes.numel(), device=absmax_codes.device) // ABSMAX_BLOCK
    return (absmax_codes.double() * scales.double()[groups] + mean).float()


def dequantize(codes, absmax_codes, scales, mean, shape):
    n = shape[0] * shape[1]
    idx = torch.stack([codes >> 4, codes & 15], dim=1).reshape(-1)[:n].long()
    absmax = block_absmax(absmax_codes, scales, mean)
    return (CODEBOOK.to(codes.device)[idx] * absmax.repeat_interleave(BLOCK)[:n]).view(shape)


class Nf4Linear(nn.Linear):
    """A frozen linear map whose weight is held as NF4 and dequantised on every use."""

    def __init__(self, linear):
        nn.Module.__init__(self)
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.shape = (linear.out_features, linear.in_features)
        codes, absmax_codes, scales, mean = quantize(linear.weight)
        # The packed codes stand as `weight` so that code looking for a layer's weight finds its device.
        self.weight = nn.Parameter(codes, requires_grad=False)
        self.register_buffer("absmax_codes", absmax_codes)
        self.register_buffer("absmax_scales", scales)
        self.absmax_mean = mean
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.to(linear.weight.device)

    def dequantized(self):
        return dequantize(self.weight, self.absmax_codes, self.absmax_scales, self.absmax_mean, self.shape)

    def forward(self, x):
        return nn.functional.linear(x, self.dequantized().to(x.dtype), self.bias)

    def resident_bytes(self):
        return self.weight.numel() + self.absmax_codes.numel() + self.absmax_scales.numel() * 4 + 4


PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def quantize_projections(model):
    """Every projection of every decoder layer to NF4; embeddings, norms and lm_head stay float."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in PROJECTIONS and type(child) is nn.Linear and ".layers." in f"{name}.":
                setattr(module, child_name, Nf4Linear(child))
    return model


def nf4_round_trip(model):
    """The base as a QLoRA trainer saw it: every projection through NF4 and back, in place."""
    with torch.no_grad():
        for name, module in model.named_modules():
            for child_name, child in module.named_children():
                if child_name in PROJECTIONS and type(child) is nn.Linear and ".layers." in f"{name}.":
                    w = child.weight
                    child.weight.copy_(dequantize(*quantize(w), tuple(w.shape)).to(w.dtype))
    return model
