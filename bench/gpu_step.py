"""GPU timings: one training step (forward, backward, Adam) and inference per slide, per model variant.

Virtual slides are read on the CPU through ``RegionReader`` exactly as in training ("reads included"); a
second row per model reads from slides held on the GPU (``TensorRegionSource``) to show the model's own
cost. Training under bf16 autocast, as the Camelyon recipes; inference as `magnet predict --precision bf16`
runs it (`magnet.inference.fast_model`), a batch per forward. Prints a Markdown table for docs/BENCHMARKS.md.

    python3 bench/gpu_step.py [--models tiny magnet3 magnet4] [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from magnet.inference.fast_model import inference_copy
from magnet.models.registry import build_model
from magnet.slides.reader import RegionReader
from magnet.slides.registry import open_slide
from magnet.slides.tensor_source import TensorRegionSource
from magnet.training.losses import LossWeights, magnet_loss

BATCH = {"tiny": 8, "magnet3": 16, "magnet4": 8}  # paper §4.3: 16 for 3 layers, 8 for 4


def _sources(kind: str, batch: int, device: torch.device) -> list:  # type: ignore[type-arg]
    if kind == "reader":
        uris = [f"synth:seed={i},lesion={'macro' if i % 2 else 'negative'}" for i in range(batch)]
        return [RegionReader(open_slide(u), threads=4) for u in uris]
    g = torch.Generator().manual_seed(0)
    return [TensorRegionSource(torch.rand(3, 2048, 2048, generator=g).to(device)) for _ in range(batch)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(name: str, kind: str, steps: int, device: torch.device) -> dict[str, float | str]:
    torch.manual_seed(0)
    model = build_model(name).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    batch = BATCH[name]
    sources = _sources(kind, batch, device)
    labels = torch.tensor([float(i % 2) for i in range(batch)], device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps + 1):  # the first step warms up (cuDNN autotune, allocator)
        _sync(device)
        t0 = time.perf_counter()
        with autocast:
            out = model(sources)
            loss = magnet_loss(out, labels, LossWeights()).total
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if step:
            times.append(time.perf_counter() - t0)
    # Inference as magnet predict runs it: the inference copy, the classifier's CNN in bf16 on a GPU
    # (--precision bf16), no auxiliary classifiers; the whole batch per forward, per-slide time reported.
    fast = inference_copy(model, "bf16" if device.type == "cuda" else "fp32")
    infer = []
    with torch.no_grad():
        for _ in range(4):  # the first warms up
            _sync(device)
            t0 = time.perf_counter()
            fast(sources, auxiliary=False)
            _sync(device)
            infer.append((time.perf_counter() - t0) / batch)
    infer = infer[1:]
    step_s = sorted(times)[len(times) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"model": name, "source": kind, "batch": batch, "step_s": step_s,
            "slides_per_s": batch / step_s, "infer_s_per_slide": min(infer), "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "magnet3", "magnet4"], choices=sorted(BATCH))
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    card = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device: {card}, torch {torch.__version__}")
    print("| model | reads | batch | train step s | slides/s | inference s/slide | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        for kind in ("tensor", "reader"):
            r = bench(name, kind, args.steps, device)
            print(f"| {r['model']} | {r['source']} | {r['batch']} | {r['step_s']:.3f} | "
                  f"{r['slides_per_s']:.1f} | {r['infer_s_per_slide']:.3f} | {r['peak_gib']:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
