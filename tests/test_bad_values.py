"""Numbers that make no sense are refused where they enter, each with one line naming key, value and rule.

Recipe keys (YAML overrides and dicts), configs built in Python, the domain objects themselves.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import pytest

from magnet.baselines.thumbnail import ThumbnailConfig
from magnet.config_io import config_from_dict, config_to_dict, load_config
from magnet.domains import FRACTION, POSITIVE, AtLeast, DomainError, Each, check_domains
from magnet.errors import ConfigError
from magnet.models.model_config import MagNetConfig
from magnet.training.losses import LossWeights
from magnet.training.recipe import DataConfig, OptimConfig, TrainConfig

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"

# (dotted key, value as written in a --set, fragment of the one-line error)
RECIPE_CASES = [
    ("optim.lr", "nan", "optim.lr=nan: must be a finite number > 0"),
    ("optim.lr", ".inf", "optim.lr=inf: must be a finite number > 0"),
    ("optim.lr", "-1e-4", "optim.lr=-0.0001: must be a finite number > 0"),
    ("optim.lr", "0", "optim.lr=0.0: must be a finite number > 0"),
    ("optim.head_lr", "-1", "optim.head_lr=-1.0: must be a finite number >= 0"),
    ("optim.weight_decay", "nan", "optim.weight_decay=nan: must be a finite number >= 0"),
    ("optim.epochs", "0", "optim.epochs=0: must be an integer >= 1"),
    ("optim.batch_size", "0", "optim.batch_size=0: must be an integer >= 1"),
    ("optim.batch_size", "-4", "optim.batch_size=-4: must be an integer >= 1"),
    ("optim.grad_accum", "0", "optim.grad_accum=0: must be an integer >= 1"),
    ("optim.grad_clip", "-1", "optim.grad_clip=-1.0: must be a finite number >= 0"),
    ("optim.warmup_epochs", "-1", "optim.warmup_epochs=-1: must be an integer >= 0"),
    ("optim.head_warmup_steps", "-5", "optim.head_warmup_steps=-5: must be an integer >= 0"),
    ("optim.head_warmup_batch", "0", "optim.head_warmup_batch=0: must be an integer >= 1"),
    ("data.reader_threads", "0", "data.reader_threads=0: must be an integer >= 1"),
    ("data.max_open_slides", "0", "data.max_open_slides=0: must be an integer >= 1"),
    ("loss.aux", "-1", "loss.aux=-1.0: must be a finite number >= 0"),
    ("loss.final", "nan", "loss.final=nan: must be a finite number >= 0"),
    ("seed", "-1", "seed=-1: must be an integer in [0, 4294967295]"),
    ("devices", "0", "devices=0: must be an integer >= 1"),
    ("num_nodes", "0", "num_nodes=0: must be an integer >= 1"),
    ("eval_every", "0", "eval_every=0: must be an integer >= 1"),
    ("model.min_scale", "0", "model.min_scale=0.0: must be a finite number in (0, 1]"),
    ("model.max_scale", "nan", "model.max_scale=nan: must be a finite number in (0, 1]"),
    ("model.sibling_offset", "1", "model.sibling_offset=1.0: must be a finite number in [0, 1)"),
    ("model.oracle_side", "1.5", "model.oracle_side=1.5: must be a finite number in (0, 1]"),
    ("model.head_mil_sharpness", "0", "model.head_mil_sharpness=0.0: must be a finite number > 0"),
    ("model.theta_grad_blur", "-1", "model.theta_grad_blur=-1.0: must be a finite number >= 0"),
    ("model.head_highpass", "-.5", "model.head_highpass=-0.5: must be a finite number >= 0"),
    ("model.head_init_std", "-1e-3", "model.head_init_std=-0.001: must be a finite number >= 0"),
    ("model.view_size", "0", "model.view_size=0: must be an integer >= 1"),
    ("model.gru_hidden", "0", "model.gru_hidden=0: must be an integer >= 1"),
    ("model.head_blocks", "0", "model.head_blocks=0: must be an integer >= 1"),
    ("model.classifier_input_size", "0", "model.classifier_input_size=0: must be an integer >= 1"),
    ("model.patches_per_layer", "[2,0]", "model.patches_per_layer=[2, 0]: must be a list of integers"),
    ("model.patches_per_layer", "[]", "with at least one item"),
    ("model.aux_layers", "[0]", "model.aux_layers=[0]: must be a list of integers every item >= 1"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), RECIPE_CASES)
def test_recipe_override_is_refused_with_key_value_and_rule(key: str, value: str, fragment: str) -> None:
    item = f"{key}={value}"
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, DEMO, [item])
    message = str(info.value)
    assert fragment in message
    assert message.startswith(f"--set {item}: ")
    assert "\n" not in message


@pytest.mark.parametrize(("key", "value", "fragment"), RECIPE_CASES[:12])
def test_dict_value_is_refused_the_same_way(key: str, value: str, fragment: str) -> None:
    import yaml

    data: dict[str, Any] = config_to_dict(TrainConfig())
    section, _, name = key.rpartition(".")
    node = data[section] if section else data
    node[name] = yaml.safe_load(value)
    with pytest.raises(ConfigError, match="^checkpoint: ") as info:
        config_from_dict(TrainConfig, data, source="checkpoint")
    assert fragment in str(info.value)


def test_shipped_recipes_still_load() -> None:
    for path in sorted(DEMO.parent.glob("*.yaml")):
        assert isinstance(load_config(TrainConfig, path), TrainConfig)


# Configs built in Python are checked by their own __post_init__, without config_io.
PYTHON_CASES = [
    (MagNetConfig, {"min_scale": float("nan")}, "min_scale=nan: must be a finite number in (0, 1]"),
    (MagNetConfig, {"view_size": 0}, "view_size=0: must be an integer >= 1"),
    (MagNetConfig, {"view_size": 56.0}, "view_size=56.0: must be an integer >= 1"),
    (MagNetConfig, {"head_mil_sharpness": float("inf")}, "head_mil_sharpness=inf: must be a finite number"),
    (MagNetConfig, {"classifier_input_size": -3}, "classifier_input_size=-3: must be an integer >= 1"),
    (OptimConfig, {"lr": float("nan")}, "lr=nan: must be a finite number > 0"),
    (OptimConfig, {"batch_size": True}, "batch_size=True: must be an integer >= 1"),
    (OptimConfig, {"epochs": 0}, "epochs=0: must be an integer >= 1"),
    (DataConfig, {"reader_threads": 0}, "reader_threads=0: must be an integer >= 1"),
    (TrainConfig, {"seed": -2}, "seed=-2: must be an integer in [0, 4294967295]"),
    (TrainConfig, {"eval_every": 0}, "eval_every=0: must be an integer >= 1"),
    (LossWeights, {"paradoxical": -1}, "paradoxical=-1: must be a finite number >= 0"),
    (ThumbnailConfig, {"size": 8}, "size=8: must be an integer >= 16"),
    (ThumbnailConfig, {"batch_size": 1}, "batch_size=1: must be an integer >= 2"),
    (ThumbnailConfig, {"lr": float("nan")}, "lr=nan: must be a finite number > 0"),
    (ThumbnailConfig, {"threads": 0}, "threads=0: must be an integer >= 1"),
    (ThumbnailConfig, {"n_bootstrap": -1}, "n_bootstrap=-1: must be an integer >= 0"),
]


@pytest.mark.parametrize(("cls", "keys", "fragment"), PYTHON_CASES)
def test_config_built_in_python_is_refused(cls: type, keys: dict[str, Any], fragment: str) -> None:
    with pytest.raises(DomainError) as info:
        cls(**keys)
    assert fragment in str(info.value)


def test_boundary_values_are_accepted() -> None:
    OptimConfig(epochs=1, batch_size=1, grad_accum=1, warmup_epochs=0, head_lr=0.0, grad_clip=0.0)
    TrainConfig(seed=0, devices="auto", eval_every=1)
    TrainConfig(devices="-1")  # Lightning's "all devices", as a string
    MagNetConfig(min_scale=1.0, max_scale=1.0, random_zoom_min_scale=1.0, sibling_offset=0.0, oracle_side=1.0)
    ThumbnailConfig(size=16, batch_size=2, n_bootstrap=0)


def test_every_numeric_field_declares_a_domain() -> None:
    """A new number without a declared range would slip through: every int field must say its domain."""
    import typing

    for cls in (TrainConfig, DataConfig, OptimConfig, MagNetConfig, LossWeights, ThumbnailConfig):
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            text = str(hints[f.name])
            if ("int" in text or "float" in text) and "Literal" not in text:
                assert "Annotated" in text, f"{cls.__name__}.{f.name} declares no domain"


@dataclasses.dataclass
class _Plain:
    ratio: float = 0.5  # no declared domain: still must be finite
    share: Annotated[float, FRACTION] = 0.5
    sizes: Annotated[tuple[int, ...], Each(AtLeast(2))] = (2,)
    rate: Annotated[float, POSITIVE] | None = None

    def __post_init__(self) -> None:
        check_domains(self)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"ratio": float("nan")}, "ratio=nan: must be a finite number"),
        ({"share": 1.5}, "share=1.5: must be a finite number in [0, 1]"),
        ({"sizes": (2, 1)}, "sizes=[2, 1]: must be a list of integers every item >= 2"),
        ({"rate": -1.0}, "rate=-1.0: must be a finite number > 0"),
    ],
)
def test_undeclared_floats_are_finite_and_declared_domains_hold(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(DomainError) as info:
        _Plain(**keys)
    assert str(info.value) == message
    assert _Plain(rate=None).rate is None


# --- command-line options ---------------------------------------------------------------------------

# (argv, option, fragment of argparse's one-line error); parsing fails before any file is touched.
CLI_CASES = [
    (["demo", "--n", "0"], "--n", "must be an integer >= 1, got '0'"),
    (["demo", "--seed", "-1"], "--seed", "must be an integer >= 0, got '-1'"),
    (["demo", "--test-counts", "40", "0", "20", "20"], "--test-counts", "must be an integer >= 1, got '0'"),
    (["synth", "dataset", "--out", "d", "--test-counts", "1", "1", "x", "1"], "--test-counts",
     "must be an integer >= 1, got 'x'"),
    (["synth", "dataset", "--out", "x", "--n", "-3"], "--n", "must be an integer >= 1, got '-3'"),
    (["synth", "dataset", "--out", "x", "--seed", "1.5"], "--seed", "must be an integer >= 0, got '1.5'"),
    (["synth", "dataset", "--out", "x", "--mpp", "nan"], "--mpp", "must be a finite number > 0, got 'nan'"),
    (["synth", "dataset", "--out", "x", "--mpp", "0"], "--mpp", "must be a finite number > 0, got '0'"),
    (["synth", "dataset", "--out", "x", "--size", "0x100"], "--size", "each >= 1"),
    (["synth", "export", "synth:seed=1", "o.tif", "--tile-size", "100"], "--tile-size",
     "must be an integer >= 16, a multiple of 16, got '100'"),
    (["synth", "export", "synth:seed=1", "o.tif", "--tile-size", "0"], "--tile-size", "got '0'"),
    (["synth", "export", "synth:seed=1", "o.tif", "--quality", "101"], "--quality",
     "must be an integer in [1, 100], got '101'"),
    (["evaluate", "c.ckpt", "m.csv", "--batch-size", "0"], "--batch-size", "must be an integer >= 1"),
    (["evaluate", "c.ckpt", "m.csv", "--bootstrap", "-1"], "--bootstrap", "must be an integer >= 0"),
    (["explain", "c.ckpt", "s.tif", "--out", "o", "--thumbnail-size", "8"], "--thumbnail-size",
     "must be an integer >= 16, got '8'"),
    (["slide-info", "s.tif", "--thumbnail-size", "0"], "--thumbnail-size", "must be an integer >= 1"),
    (["data", "camelyon", "--out", "m.csv", "--seed", "-2"], "--seed", "must be an integer >= 0"),
]


@pytest.mark.parametrize(("argv", "option", "fragment"), CLI_CASES)
def test_cli_option_out_of_domain_is_a_usage_error(
    argv: list[str], option: str, fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from magnet.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"error: argument {option}: " in err[-1] and fragment in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_cli_recipe_override_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from magnet.cli import main

    assert main(["train", str(DEMO), "--set", "optim.lr=nan", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == "magnet: error: --set optim.lr=nan: optim.lr=nan: must be a finite number > 0\n"
    assert not (tmp_path / "run").exists()


# --- training stops at the first non-finite loss or weight -------------------------------------------

TINY_MODEL = {
    "patches_per_layer": [2, 2], "view_size": 32, "read_size": 64, "final_size": 32, "final_read_size": 64,
    "classifier_input_size": 32, "backbone": "small", "aux_backbone": "small", "gru_hidden": 8,
    "head_branch_channels": 4, "aux_layers": [1, 2], "sampler": "bilinear",
}


def _tiny_rows() -> list[Any]:
    from magnet.data.manifest import ManifestRow
    from magnet.synth.dataset import make_dataset

    slides = make_dataset(12, 3, size=(32768, 32768), version=1)  # version 1 renders faster
    pos = [s for s in slides if s.label == 1][:2]
    neg = [s for s in slides if s.label == 0][:2]
    return [ManifestRow(s.uri, s.label, s.lesion_class, "train") for s in pos + neg]


def test_nan_loss_stops_training_naming_the_step_and_saves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import magnet.training.loop as loop
    from magnet.errors import MagnetError

    real_loss = loop.magnet_loss
    calls = []

    def nan_on_second_batch(*args: Any, **kwargs: Any) -> Any:
        losses = real_loss(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            losses.total = losses.total * float("nan")
        return losses

    monkeypatch.setattr(loop, "magnet_loss", nan_on_second_batch)
    cfg = config_from_dict(TrainConfig, {
        "model": TINY_MODEL, "accelerator": "cpu", "data": {"val_split": "", "reader_threads": 1},
        "optim": {"epochs": 2, "batch_size": 1},
    })
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = loop.Trainer(cfg, tmp_path / "run", manifest_rows=_tiny_rows(), show_progress=False)
        with pytest.raises(MagnetError, match=r"^epoch 1, step 2: the training loss is nan; stopped") as info:
            trainer.fit()
    finally:
        torch.set_num_threads(before)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / "best.ckpt").exists() and not (tmp_path / "run" / "last.ckpt").exists()


def test_non_finite_weights_after_a_step_are_refused() -> None:
    import torch

    from magnet.errors import MagnetError
    from magnet.training.finite import check_step

    model = torch.nn.Linear(2, 1)
    check_step([0.5, 0.25], model, epoch=0, step=0)  # finite: passes
    with torch.no_grad():
        model.bias.fill_(float("inf"))
    message = r"^epoch 3, step 7: non-finite weights after the optimiser step \(bias\)"
    with pytest.raises(MagnetError, match=message):
        check_step([0.5], model, epoch=2, step=6)


def test_a_checkpoint_with_nan_weights_is_never_written(tmp_path: Path) -> None:
    import torch

    from magnet.errors import MagnetError
    from magnet.training.checkpoints import save_checkpoint

    state = {"w": torch.ones(2), "bn.running_var": torch.tensor([1.0, float("nan")]), "n": torch.tensor(3)}
    with pytest.raises(MagnetError, match=r"best.ckpt: not written: non-finite weights \(bn.running_var\)"):
        save_checkpoint(tmp_path / "best.ckpt", {"model": state})
    assert list(tmp_path.iterdir()) == []
    save_checkpoint(tmp_path / "best.ckpt", {"model": {"w": torch.ones(2)}})
    assert (tmp_path / "best.ckpt").is_file()


# --- strict JSON out ----------------------------------------------------------------------------------


def _strict_loads(text: str) -> Any:
    """``json.loads`` as strict readers do it: NaN and Infinity are not JSON."""
    import json

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_strict_json_writes_non_finite_numbers_as_null() -> None:
    import numpy as np

    from magnet.strict_json import dumps

    value = {"p": float("nan"), "xs": (float("inf"), 0.5, -float("inf")), "f32": np.float32("nan"), "n": 3,
             "ok": np.float64(0.25), "flag": True}
    assert _strict_loads(dumps(value)) == {"p": None, "xs": [None, 0.5, None], "f32": None, "n": 3,
                                           "ok": 0.25, "flag": True}


def test_metrics_json_holds_null_for_an_undefined_auroc(tmp_path: Path) -> None:
    from magnet.evaluation.reports import write_metrics_json

    write_metrics_json({"all": {"auroc": float("nan"), "n": 2}}, tmp_path / "metrics.json")
    assert _strict_loads((tmp_path / "metrics.json").read_text()) == {"all": {"auroc": None, "n": 2}}


def test_predict_of_a_corrupt_checkpoint_gives_null_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from magnet.cli import main
    from magnet.models.magnet import MagNet
    from magnet.training.checkpoints import FORMAT

    cfg = config_from_dict(TrainConfig, {"model": TINY_MODEL, "accelerator": "cpu"})
    state = MagNet(cfg.model, load_weights=False).state_dict()
    state["classifier.head.4.bias"].fill_(float("nan"))  # the slide logit is NaN, the zoom still runs
    # Written by hand, as an older version could: save_checkpoint itself refuses non-finite weights.
    torch.save({"format": FORMAT, "config": config_to_dict(cfg), "model": state}, tmp_path / "old.ckpt")
    uri = _tiny_rows()[0].slide
    assert main(["predict", str(tmp_path / "old.ckpt"), uri]) == 1
    captured = capsys.readouterr()
    (result,) = _strict_loads(captured.out)
    assert result["probability"] is None and "non-finite probability (nan)" in result["error"]
    assert "non-finite probability" in captured.err


def test_cli_choices_are_the_library_s_own_lists() -> None:
    """The command line spells its choices out (so that ``magnet --help`` need not import torch); they must
    stay the lists the library accepts."""
    from magnet.cli import build_parser
    from magnet.inference.fast_model import PRECISIONS
    from magnet.slides.colour import STAIN_NORMS

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    choices = {(name, a.dest): tuple(a.choices) for name in ("predict", "evaluate")
               for a in commands[name]._actions if a.choices is not None}
    assert choices[("predict", "precision")] == PRECISIONS
    assert choices[("predict", "stain_norm")] == STAIN_NORMS == choices[("evaluate", "stain_norm")]
