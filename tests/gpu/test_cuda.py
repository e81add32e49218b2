"""CUDA checks, run by bench/gpu.sh on a lent GPU machine; skipped (with the reason) everywhere else."""

from __future__ import annotations

import copy

import pytest
import torch

from magnet.layers.samplers import linearized_sample
from magnet.models import MagnifyingLayer, model_config
from magnet.models.registry import build_model
from magnet.slides.tensor_source import TensorRegionSource
from magnet.training.losses import LossWeights, magnet_loss
from magnet.training.warmup import warm_up_heads

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu.sh)")


def _slides(n: int, device: str) -> list[TensorRegionSource]:
    g = torch.Generator().manual_seed(0)
    return [TensorRegionSource(torch.rand(3, 512, 384, generator=g).to(device)) for _ in range(n)]


def test_tiny_model_matches_cpu_in_float32() -> None:
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    with torch.no_grad():
        cpu = model(_slides(2, "cpu"))
        gpu = model.cuda()(_slides(2, "cuda"))
    torch.testing.assert_close(gpu.logit.cpu(), cpu.logit, atol=1e-3, rtol=1e-3)
    for a, b in zip(gpu.rois, cpu.rois, strict=True):
        torch.testing.assert_close(a.cpu(), b, atol=1e-4, rtol=1e-4)


def test_bf16_training_step_gives_finite_gradients() -> None:
    torch.manual_seed(0)
    model = build_model("tiny", sampler="linearized").cuda().train()
    labels = torch.tensor([0.0, 1.0], device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(_slides(2, "cuda"), generator=torch.Generator("cuda").manual_seed(1))
        loss = magnet_loss(out, labels, LossWeights()).total
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(torch.isfinite(t).all() for t in out.thetas)


def test_linearized_sampler_stays_float32_under_autocast() -> None:
    image = torch.rand(2, 3, 64, 64, device="cuda")
    grid = (torch.rand(2, 16, 16, 2, device="cuda") * 2 - 1).requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = linearized_sample(image, grid, generator=torch.Generator("cuda").manual_seed(0))
    assert out.dtype == torch.float32
    out.sum().backward()
    assert grid.grad is not None and torch.isfinite(grid.grad).all()


def test_linearized_sampler_draws_its_noise_from_a_cpu_generator() -> None:
    # Training passes a CPU generator whatever the device, so a run's draws repeat on any machine.
    image = torch.rand(2, 3, 64, 64)
    grid = torch.rand(2, 16, 16, 2) * 2 - 1
    cpu = linearized_sample(image, grid, generator=torch.Generator().manual_seed(3))
    gpu = linearized_sample(image.cuda(), grid.cuda(), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("theta_grad", [True, False])
def test_training_forward_on_gpu_takes_the_loops_cpu_generator(theta_grad: bool) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", sampler="linearized", theta_grad=theta_grad).cuda().train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(_slides(2, "cuda"), generator=torch.Generator().manual_seed(1))
        loss = magnet_loss(out, torch.tensor([0.0, 1.0], device="cuda"), LossWeights()).total
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(t).all() for t in out.thetas)


def test_head_warm_up_on_the_card_takes_the_cpu_runs_steps() -> None:
    # The Trainer warms the heads up on the training device (224² views took 2.5 s a step on a CPU);
    # the picks come from a CPU generator, so the card takes the same batches and ends near the CPU run.
    torch.manual_seed(0)
    sizes = dict(view_size=24, read_size=48, final_size=32, final_read_size=64, classifier_input_size=32)
    config = model_config("tiny", **sizes, sibling_layout="strips", head_mil=True, head_highpass=2.0)
    cpu_layer = MagnifyingLayer(2, config, 1)
    gpu_layer = copy.deepcopy(cpu_layer).cuda()
    views = torch.rand(8, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    labels = (torch.arange(8) % 2).float()

    def warm(layer: MagnifyingLayer, device: str) -> list[float]:
        return warm_up_heads(layer, views.to(device), labels.to(device), steps=5, batch_size=4, lr=1e-3,
                             generator=torch.Generator().manual_seed(2))

    cpu = warm(cpu_layer, "cpu")
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # float32 convolutions, as on the CPU
        gpu = warm(gpu_layer, "cuda")
    torch.testing.assert_close(torch.tensor(gpu), torch.tensor(cpu), atol=1e-3, rtol=1e-3)
    assert all(p.is_cuda for p in gpu_layer.head_parameters())
