#!/usr/bin/env python3
"""bench_torch.py ARCH STATE.pt DATA.h5 [--batch 256]: PyTorch's forward-pass
throughput for one reference architecture, one thread, at its best: FP32
(default, channels_last, TorchScript-frozen) and int8 static quantization in
FX graph mode (onednn, fbgemm and qnnpack engines, default and channels_last),
calibrated on training images. Prints one JSON object per configuration:
{"arch", "config", "images_per_s", "accuracy"} (accuracy on the first 2,000
test images, so each number can be checked for sanity). Measures only."""
import argparse
import copy
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ccq_torch as ct  # noqa: E402


def timeit(fn, x, min_seconds=3.0):
    with torch.no_grad():
        for _ in range(3):
            fn(x)
        best = float("inf")
        t_end = time.perf_counter() + min_seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            fn(x)
            best = min(best, time.perf_counter() - t0)
    return x.shape[0] / best


def accuracy(fn, x, y):
    with torch.no_grad():
        return float((fn(x).argmax(1) == y).float().mean() * 100)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("arch", choices=sorted(ct.ARCHS))
    ap.add_argument("state")
    ap.add_argument("data")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    xte_u8, yte = ct.load_split(a.data, "test")
    xtr_u8, _ = ct.load_split(a.data, "train")
    xb = ct.normalise(xte_u8[:a.batch], ct.FMNIST_MEAN, ct.FMNIST_STD)
    xacc, yacc = ct.normalise(xte_u8[:2000], ct.FMNIST_MEAN, ct.FMNIST_STD), torch.as_tensor(yte[:2000])
    calib = ct.normalise(xtr_u8[:1024], ct.FMNIST_MEAN, ct.FMNIST_STD)
    model = ct.ARCHS[a.arch]()
    model.load_state_dict(torch.load(a.state))
    model.eval()

    def emit(config, fn, x=xb, xa=xacc):
        ips = timeit(fn, x, a.seconds)
        print(json.dumps({"arch": a.arch, "config": config, "images_per_s": round(ips, 1),
                          "accuracy": round(accuracy(fn, xa, yacc), 2), "batch": a.batch,
                          "threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)

    emit("fp32 default", model)
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    emit("fp32 channels_last", cl, xb.contiguous(memory_format=torch.channels_last),
         xacc.contiguous(memory_format=torch.channels_last))
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(copy.deepcopy(model), xb[:1]).eval())
    emit("fp32 torchscript-frozen", frozen)

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    for engine in ("onednn", "fbgemm", "qnnpack"):
        if engine not in torch.backends.quantized.supported_engines:
            print(json.dumps({"arch": a.arch, "config": f"int8 {engine}", "error": "engine not built"}), flush=True)
            continue
        try:
            torch.backends.quantized.engine = engine
            prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping(engine), (xb[:1],))
            with torch.no_grad():
                for i in range(0, len(calib), 256):
                    prepared(calib[i:i + 256])
            q = convert_fx(prepared)
            emit(f"int8 fx {engine}", q)
            emit(f"int8 fx {engine} channels_last", q, xb.contiguous(memory_format=torch.channels_last),
                 xacc.contiguous(memory_format=torch.channels_last))
        except Exception as e:  # a backend that does not run here is reported, not fatal
            print(json.dumps({"arch": a.arch, "config": f"int8 fx {engine}", "error": f"{type(e).__name__}: {e}"[:300]}),
                  flush=True)


if __name__ == "__main__":
    main()
