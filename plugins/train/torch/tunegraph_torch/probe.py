"""What the torch backend would run on here: versions, CUDA, devices."""
import importlib.metadata as md
import os
import platform
import sys


def _version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _site(name):
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return None
    return os.path.dirname(os.path.abspath(str(dist.locate_file(""))) + os.sep)


def probe():
    info = {
        "python": os.path.realpath(sys.executable),
        "pythonVersion": platform.python_version(),
        "packages": {n: _version(n) for n in ("torch", "transformers", "peft", "safetensors", "accelerate", "bitsandbytes", "numpy")},
    }
    # Installing or removing a package changes these directories: tunegraph stats them to know when to probe again.
    import site

    dirs = {s for s in (_site(n) for n in ("torch", "transformers", "peft")) if s}
    dirs.update(d for d in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(d))
    dirs.update(d for d in sys.path if d.endswith("site-packages") and os.path.isdir(d))
    info["sitePackages"] = sorted(dirs)
    missing = [n for n in ("torch", "transformers", "peft", "safetensors", "numpy") if info["packages"][n] is None]
    if missing:
        info["available"] = False
        info["reason"] = f"{sys.executable} lacks {', '.join(missing)} (pip install -r plugins/train/torch/requirements.txt)"
        return info
    try:
        import torch
    except Exception as e:  # a broken install says why
        info["available"] = False
        info["reason"] = f"import torch failed: {e}"
        return info
    info["available"] = True
    info["packages"]["torch"] = torch.__version__
    info["cuda"] = torch.version.cuda
    cuda = False
    devices = []
    reason = None
    try:
        cuda = torch.cuda.is_available()
        if cuda:
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                devices.append({"name": p.name, "memory": p.total_memory, "capability": f"{p.major}.{p.minor}"})
        elif torch.version.cuda is None:
            reason = "this torch is a CPU build"
        else:
            reason = "torch finds no usable CUDA device"
    except Exception as e:
        reason = f"CUDA failed to initialise: {e}"
        cuda = False
    info["cudaAvailable"] = bool(cuda)
    info["cudaReason"] = reason
    info["devices"] = devices
    info["bf16"] = bool(cuda and torch.cuda.is_bf16_supported())
    info["threads"] = torch.get_num_threads()
    return info
