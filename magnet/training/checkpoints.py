"""Checkpoints: written atomically, carrying their config, loaded with ``weights_only=True``.

A checkpoint is a plain dict of tensors and builtins (no pickled classes), so ``torch.load(...,
weights_only=True)`` reads it and ``predict`` rebuilds the model from the checkpoint alone:

    format: "magnet-checkpoint/1", config: resolved TrainConfig as a dict, model: state_dict,
    optimizer / scheduler: state dicts (absent in exported weights), epoch: completed epochs,
    best_score: best validation AUROC so far, history: list of per-epoch metric dicts.

Writing goes to a temporary file in the same folder, then ``os.replace``: an interrupted write (Ctrl-C, a
killed job, a full disk) never leaves a half-written checkpoint under the real name.
Nor is a checkpoint with a NaN or infinite weight ever written (``finite``): it would load and predict NaN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from magnet.atomic import atomic_path
from magnet.config_io import config_from_dict, config_to_dict
from magnet.errors import ConfigError, MagnetError
from magnet.models.magnet import MagNet
from magnet.models.model_config import MagNetConfig
from magnet.training.finite import non_finite_names
from magnet.training.recipe import TrainConfig

FORMAT = "magnet-checkpoint/1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus the format tag) to ``path`` atomically; never with non-finite weights."""
    bad = non_finite_names(payload.get("model", {}))
    if bad:
        raise MagnetError(f"{path}: not written: non-finite weights ({', '.join(bad[:3])}"
                          f"{' ...' if len(bad) > 3 else ''})")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save({"format": FORMAT, **payload}, handle)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (``MagnetError`` naming the file otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise MagnetError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file to the user
        raise MagnetError(f"{path}: not a readable magnet checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MagnetError(f"{path}: not a magnet checkpoint (format tag missing or unknown)")
    return payload


def checkpoint_config(payload: dict[str, Any], path: str | Path) -> TrainConfig:
    try:
        return config_from_dict(TrainConfig, payload["config"])
    except (ConfigError, KeyError) as exc:
        raise MagnetError(f"{path}: checkpoint config is invalid ({exc})") from None


def load_model(path: str | Path) -> tuple[MagNet, TrainConfig]:
    """Rebuild the model of a checkpoint from the checkpoint alone, in eval mode on the CPU.

    Never reads or downloads ImageNet weights (``build_offline``): the checkpoint's weights replace every
    parameter. The returned config, and ``model.config``, say what training used.
    """
    payload = load_checkpoint(path)
    config = checkpoint_config(payload, path)
    model = build_offline(config.model)
    load_weights(model, payload["model"], path)
    model.eval()
    return model, config


def build_offline(config: MagNetConfig) -> MagNet:
    """The MagNet of ``config`` without reading ImageNet weights, for weights that come from a checkpoint.

    With ``pretrained: true`` the ImageNet weights would only be read (or downloaded) to be overwritten, and
    a trained model must load offline; the encoders are still built as the pretrained ones (same layout and
    input scaling, ``magnet.models.backbones``).
    """
    return MagNet(config, load_weights=False)


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``load_state_dict`` with a one-line error when the checkpoint was made for another model config."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}")
        raise ConfigError(f"{path}: checkpoint was made for another model config ({'; '.join(parts)})")
    model.load_state_dict(state)


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return config_to_dict(config)
