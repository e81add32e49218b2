"""A MagNet prepared for inference: the same predictions, computed faster on a CPU or GPU.

``inference_copy(model)`` returns an evaluation-mode copy (the trained model is left as it was) whose
classifier CNN, the bulk of a forward pass (InceptionV3 on 18 patches for ``magnet3``), and the localisation
heads are rewritten:

- **Batch norm folded into the convolution before it.** In evaluation mode a batch norm is a fixed affine map
  per channel, y = gamma (x - mean) / sqrt(var + eps) + beta, so a convolution followed by it is one
  convolution with weights scaled by gamma / sqrt(var + eps) and a shifted bias (the standard inference
  fusion, e.g. Jacob et al., CVPR 2018, §3.2; torch's ``fuse_conv_bn_eval`` does the arithmetic). A pass
  over every activation of the network is saved. The pairs are found on the traced graph (``torch.fx``),
  so only a batch norm that reads a convolution's output, and nothing else reads, is folded.
- **Channels-last memory format** for the CNN's weights and input: oneDNN (CPU) and cuDNN (GPU) run their
  fastest convolution kernels on NHWC tensors; the NCHW default costs a layout conversion around each one.
  For the classifier only: the heads' grouped convolutions ran slower channels-last on a CPU.
- ``precision="bf16"`` [choice, off by default]: the classifier CNN alone runs under bfloat16 autocast
  (heads, sampler and ROIs stay float32, so the boxes do not move); its features return as float32. Fast
  on GPUs and on CPUs with native bfloat16 (AVX512-BF16, AMX); slow elsewhere. Probabilities move by
  bfloat16's rounding (8 bits of mantissa), so it is a user's explicit choice, never the default.

Measured effect and the speed of ``magnet predict``: docs/BENCHMARKS.md ("Per-slide inference speed").
Outputs agree with the unprepared model to float rounding (tests/inference/test_fast_model.py). The
auxiliary classifiers are not prepared: inference leaves them out (``MagNet.forward(auxiliary=False)``).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from magnet.errors import ConfigError
from magnet.models.magnet import MagNet
from magnet.models.magnifying import MagnifyingLayer

__all__ = ["PRECISIONS", "fold_batch_norms", "inference_copy"]

PRECISIONS = ("fp32", "bf16")


class _ConvLeafTracer(fx.Tracer):
    """Keeps every convolution one node, subclasses too (EfficientNet-Lite0's same-padding convolution)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, module_qualified_name)


def fold_batch_norms(network: nn.Module) -> nn.Module:
    """``network`` (evaluation mode) with each batch norm that follows a convolution folded into it.

    Returns a ``torch.fx.GraphModule`` computing the same function; ``network`` itself is not changed.
    A network that cannot be traced comes back as it was (slower, never wrong).
    """
    if network.training:
        raise ValueError("fold_batch_norms needs a network in evaluation mode (folding uses running stats)")
    try:
        graph = _ConvLeafTracer().trace(network)
    except Exception:  # data-dependent control flow: leave it unfused
        return network
    # The graph module holds new parent modules around ``network``'s own leaves; a folded convolution is a
    # new module (``fuse_conv_bn_eval`` copies it), so ``network`` is never changed and needs no copy.
    folded = fx.GraphModule(network, graph)
    modules = dict(folded.named_modules())
    for node in list(folded.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if not (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1):
            continue
        conv, norm = modules[source.target], modules[node.target]
        if not isinstance(conv, nn.Conv2d) or not norm.track_running_stats:
            continue
        _replace(folded, str(source.target), fuse_conv_bn_eval(conv, norm))
        node.replace_all_uses_with(source)
        folded.graph.erase_node(node)
    folded.graph.lint()
    folded.delete_all_unused_submodules()
    folded.recompile()
    return folded


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


class _ChannelsLast(nn.Module):
    """Runs ``network`` (weights already channels-last) on a channels-last copy of its input."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, images: Tensor) -> Tensor:
        out: Tensor = self.network(images.contiguous(memory_format=torch.channels_last))
        return out


class _Bfloat16(nn.Module):
    """Runs ``network`` under bfloat16 autocast on its input's device; float32 out."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: Tensor) -> Tensor:
        with torch.autocast(images.device.type, dtype=torch.bfloat16):
            out: Tensor = self.network(images)
        return out.float()


def inference_copy(model: MagNet, precision: str = "fp32") -> MagNet:
    """An evaluation-mode copy of ``model``: classifier CNN folded and channels-last, heads folded;
    ``precision="bf16"`` runs that CNN in bfloat16 (see above).

    For prediction only: the copy's networks are traced graphs that ``load_state_dict`` of a checkpoint
    does not fit, and their batch norms are gone, so it must not be trained.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: must be one of {', '.join(PRECISIONS)}")
    fast = copy.deepcopy(model).eval()
    backbone = fast.classifier.backbone
    backbone.encoder = _ChannelsLast(fold_batch_norms(backbone.encoder))
    if precision == "bf16":
        backbone.encoder = _Bfloat16(backbone.encoder)
    for layer in fast.layers:
        assert isinstance(layer, MagnifyingLayer)
        heads = layer.heads
        if len(heads.blocks):  # a layer whose children are all frozen has no head network
            heads.blocks = fold_batch_norms(heads.blocks)  # type: ignore[assignment]  # a graph, same calls
    return fast
