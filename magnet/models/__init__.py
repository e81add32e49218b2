"""MagNet models: magnifying layers, classifiers, the full network and its named variants (paper §3).

Tensors in, tensors out; pixels enter only through ``magnet.geometry.RegionSource``.
"""

from magnet.models.classifier import AuxiliaryClassifier, Classifier, ClassifierOutput
from magnet.models.magnet import MagNet, MagNetOutput
from magnet.models.magnifying import MagnifyingLayer, MagnifyingOutput
from magnet.models.model_config import MagNetConfig
from magnet.models.registry import MODELS, build_model, model_config
from magnet.models.zoom import ZOOM_STRATEGIES, ZoomStrategy, zoom_strategy
from magnet.models.zoom_levers import sibling_offsets

__all__ = [
    "MODELS",
    "ZOOM_STRATEGIES",
    "AuxiliaryClassifier",
    "Classifier",
    "ClassifierOutput",
    "MagNet",
    "MagNetConfig",
    "MagNetOutput",
    "MagnifyingLayer",
    "MagnifyingOutput",
    "ZoomStrategy",
    "build_model",
    "model_config",
    "sibling_offsets",
    "zoom_strategy",
]
