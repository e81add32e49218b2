"""A CNN whose weights do not change, computed faster: batch norms folded, channels-last memory.

Two users: the inference copy of a trained MagNet (``magnet.inference.fast_model``) and a classifier whose
pretrained CNN is frozen during training (``model.freeze_backbone``), where the CNN is a constant function
and its forward pass over the final patches was half of a CPU training step.

- **Batch norm folded into the convolution before it.** In evaluation mode a batch norm is a fixed affine map
  per channel, y = gamma (x - mean) / sqrt(var + eps) + beta, so a convolution followed by it is one
  convolution with weights scaled by gamma / sqrt(var + eps) and a shifted bias (the standard inference
  fusion, e.g. Jacob et al., CVPR 2018, §3.2; torch's ``fuse_conv_bn_eval`` does the arithmetic). A pass
  over every activation of the network is saved. The pairs are found on the traced graph (``torch.fx``),
  so only a batch norm that reads a convolution's output, and nothing else reads, is folded.
- **Channels-last memory format** for the weights and the input: oneDNN (CPU) and cuDNN (GPU) run their
  fastest convolution kernels on NHWC tensors; the NCHW default costs a layout conversion around each one.

Both keep the function: outputs agree with the original to float rounding, and gradients still flow to the
input (tests/models/test_constant_cnn.py). On 216 patches of 112² on 2 CPU cores, EfficientNet-Lite0 took
2.0-2.2 s as it is and 0.97-1.02 s prepared (docs/BENCHMARKS.md, "A frozen classifier CNN, prepared once").
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["ChannelsLast", "PreparedCopy", "fold_batch_norms", "prepare_constant_cnn"]


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


class ChannelsLast(nn.Module):
    """Runs ``network`` (weights made channels-last here) on a channels-last copy of its input."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, images: Tensor) -> Tensor:
        out: Tensor = self.network(images.contiguous(memory_format=torch.channels_last))
        return out


def prepare_constant_cnn(network: nn.Module) -> nn.Module:
    """A copy of ``network`` (evaluation mode, weights that will not change), folded and channels-last: the
    same function, faster. A copy, because the conversion to channels-last would otherwise reach the
    weights that folding leaves shared with ``network``."""
    return ChannelsLast(fold_batch_norms(copy.deepcopy(network)))


class PreparedCopy:
    """The prepared copy of a constant network, made on first use and again whenever the network's tensors
    change: loaded weights (``load_state_dict`` writes in place, which bumps each tensor's version counter)
    or a move to another device or dtype (new tensors). Not a module: it is never saved in a state dict
    nor trained, and a deep copy of its owner prepares its own."""

    def __init__(self) -> None:
        self._key: tuple[tuple[int, int], ...] | None = None
        self._prepared: nn.Module | None = None
        self._pinned: nn.Module | None = None

    @property
    def pinned(self) -> bool:
        return self._pinned is not None

    def pin(self, prepared: nn.Module) -> None:
        """Use ``prepared`` from now on, whatever network ``of`` is given: for a copy made for inference,
        whose own networks are already prepared graphs that cannot be prepared again."""
        self._pinned = prepared

    def of(self, network: nn.Module) -> nn.Module:
        if self._pinned is not None:
            return self._pinned
        key = tuple((t.data_ptr(), t._version) for t in network.state_dict(keep_vars=True).values())
        if self._prepared is None or key != self._key:
            self._prepared, self._key = prepare_constant_cnn(network), key
        return self._prepared
