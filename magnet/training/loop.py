"""The training loop (paper §4.3, docs/method.md §5), with Lightning Fabric for devices and precision.

One epoch: shuffle the training rows with a generator seeded by ``(seed, epoch)`` (``schedule``), give each
slide a dihedral map (folded into its root ROI, docs/method.md §1), run the MagNet on the batch (the model
reads the slides itself through ``RegionReader``s), back-propagate the loss of ``losses``, step Adam every
``grad_accum`` batches; cosine-anneal the learning rate per epoch; validate; write ``last.ckpt`` (and
``best.ckpt`` on a better validation AUROC) atomically (``checkpoints``); append a row to ``metrics.csv``
and TensorBoard (``run_log``, with the zoom ``diagnostics``). A non-finite loss or weight stops the run
at once (``finite``), before anything of that epoch is saved. Before epoch 1 the first layer's heads may be
warmed up alone on cached root views (``warmup``, docs/method.md §9); after the last, the readout of
``best.ckpt`` may be fitted again on its cached final-patch features (``readout_refit``, ``refit.epochs``;
the checkpoint before the refit is kept as ``best-trained.ckpt``).

The run folder is locked for the run's lifetime, and a resume that would change what the run learns is
refused unless allowed (``run_folder``). A slide that cannot be read is logged once and left out, the rest
of its batch still trains, and the run stops only past ``data.max_failed_share`` (``failures``).

Under the oracle-zoom control (docs/method.md §8) the final ROIs of each step come from
``magnet.inference.oracle``, placed on the lesion outlines that the manifest's ``lesions`` column names (the
same outlines feed the per-layer ``lesion_share`` diagnostic).

Every random draw of an epoch derives from ``(seed, epoch)``, so a run resumed from the checkpoint of
epoch k gives the same metrics as one that never stopped (on the CPU; GPU kernels may differ bitwise).
Under DDP every rank takes an equal share of each epoch's permutation; validation runs on every rank over
all validation slides (duplicated work, kept simple; the numbers are identical on every rank).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.fabric import Fabric
from tqdm import tqdm

from magnet.config_io import save_config
from magnet.data.manifest import ManifestRow, read_manifest
from magnet.errors import ConfigError, MagnetError, NonFiniteError, SlideError
from magnet.geometry import NUM_DIHEDRAL, dihedral_matrix
from magnet.inference.oracle import OracleZoom
from magnet.inference.runner import predict_slides
from magnet.metrics.auroc import auroc
from magnet.metrics.localisation import LesionAreas, manifest_outlines
from magnet.models import zoom_strategy
from magnet.models.magnet import MagNet
from magnet.models.magnifying import MagnifyingLayer
from magnet.slides.colour import normaliser
from magnet.slides.pool import SlidePool
from magnet.slides.registry import slide_identity
from magnet.training.checkpoints import (
    build_offline,
    checkpoint_config,
    config_dict,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from magnet.training.colour_augment import SlideJitters
from magnet.training.diagnostics import ZoomDiagnostics
from magnet.training.failures import SlideFailures
from magnet.training.finite import check_step, non_finite_forward
from magnet.training.losses import magnet_loss
from magnet.training.readout_refit import TRAINED_CHECKPOINT, refit_run
from magnet.training.recipe import TrainConfig
from magnet.training.run_folder import (
    RunFolder,
    data_fingerprint,
    refuse_changes,
    resume_changes,
)
from magnet.training.run_log import RunLog
from magnet.training.schedule import epoch_generator, lr_factor, param_groups
from magnet.training.warmup import read_root_view, warm_up_heads


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_score: float
    history: list[dict[str, Any]]
    interrupted: bool = False


def _model_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Model keys that differ; ``variant`` only names the preset the values came from (older runs lack it)."""
    return sorted(k for k in set(a) | set(b) if k != "variant" and a.get(k) != b.get(k))


class Trainer:
    """Holds the state of one run; ``fit()`` trains it. Build with ``Trainer(cfg, run_dir, resume)``.

    The run folder is claimed (created, locked) by the constructor and released by ``fit()``, or by the
    constructor itself when it fails (a folder it created and left empty is removed again).
    ``allow_changes``: resume even when the data, seed, optimiser or loss settings differ from the
    checkpoint's (recorded in the folder's ``history.jsonl``).
    """

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False,
                 allow_changes: bool = False, manifest_rows: Sequence[ManifestRow] | None = None,
                 show_progress: bool = True) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.show_progress = show_progress
        rows = list(manifest_rows) if manifest_rows is not None else self._read_manifest()
        self.train_rows = [r for r in rows if r.split == cfg.data.train_split]
        self.val_rows = [r for r in rows if cfg.data.val_split and r.split == cfg.data.val_split]
        self._check_rows()
        # Lesion outlines named by the manifest (its `lesions` column): diagnostics, and the oracle zoom.
        folder = Path(cfg.data.manifest).parent if cfg.data.manifest else Path.cwd()
        self.outlines = manifest_outlines(rows, folder)
        self.lesion_areas: dict[str, LesionAreas] = {}  # per slide, kept across epochs
        self.oracle = None
        if zoom_strategy(cfg.model).needs_final_rois:  # oracle zoom: final patches on the outlines
            self.oracle = OracleZoom.for_manifest(cfg.model, self.train_rows + self.val_rows, folder,
                                                  cfg.data.manifest or "manifest", self.outlines)
        self.fabric = self._fabric()
        self.folder = RunFolder(self.run_dir)
        self._claim_folder()
        try:
            self._prepare(resume, allow_changes)
        except BaseException:
            self.folder.release(tidy=True)
            raise

    def _fabric(self) -> Fabric:
        cfg = self.cfg
        try:
            devices = int(cfg.devices) if str(cfg.devices).strip().isdigit() else cfg.devices
            fabric = Fabric(accelerator=cfg.accelerator, devices=devices, num_nodes=cfg.num_nodes,
                            strategy=cfg.strategy, precision=cfg.precision)  # type: ignore[arg-type]
        except (RuntimeError, TypeError, ValueError) as exc:  # Lightning's word on an impossible setting
            raise ConfigError(f"accelerator={cfg.accelerator} devices={cfg.devices} strategy={cfg.strategy} "
                              f"precision={cfg.precision}: {exc} (set e.g. --set accelerator=cpu)") from None
        fabric.launch()
        fabric.seed_everything(cfg.seed, verbose=False)
        return fabric

    def _claim_folder(self) -> None:
        """Rank 0 claims the run folder; every rank learns whether it could (so that all stop together)."""
        refusal = ""
        if self.fabric.is_global_zero:
            try:
                self.folder.claim()
            except MagnetError as exc:
                refusal = str(exc)
        refusal = self.fabric.broadcast(refusal, src=0)
        if refusal:
            raise MagnetError(refusal)

    def _prepare(self, resume: bool, allow_changes: bool) -> None:
        """Everything between claiming the folder and the first epoch: resume checks, model, warm-up."""
        cfg, last = self.cfg, self.run_dir / "last.ckpt"
        if self.fabric.is_global_zero:
            # Left by a job killed mid-write; safe to remove only now that the folder is ours.
            for stale in self.run_dir.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        if last.exists() and not resume:
            raise MagnetError(f"{self.run_dir}: run folder already holds a checkpoint; use --resume or "
                              "another --out")
        if resume and not last.exists():
            raise MagnetError(f"{last}: nothing to resume (no last checkpoint in {self.run_dir})")
        self.data = data_fingerprint({"train": self.train_rows, "validation": self.val_rows})
        share = cfg.data.max_failed_share
        self.failures = {
            "train": SlideFailures("train", len(self.train_rows), share, echo=self._echo),
            "validation": SlideFailures("validation", len(self.val_rows), share, echo=self._echo),
        }
        self.pool = SlidePool(grey_filter=cfg.data.grey_filter, threads=cfg.data.reader_threads,
                              max_open=cfg.data.max_open_slides, wrap=normaliser(cfg.data.stain_norm))
        self.jitters = SlideJitters(cfg.data.colour, cfg.seed)  # colour augmentation (off by default)
        self.slide_ids = {row.slide: i for i, row in enumerate(self.train_rows)}
        # A resumed model takes every weight from its checkpoint: no ImageNet weights to read (offline).
        model = build_offline(cfg.model) if resume else MagNet(cfg.model)
        optimizer = torch.optim.Adam(param_groups(model, cfg), weight_decay=cfg.optim.weight_decay)
        self.epoch, self.best_score, self.history = 0, -math.inf, []
        self.warmup_losses: list[float] = []
        if resume:
            payload = load_checkpoint(last)
            changes = self._resume_changes(payload, last, allow_changes)
            load_weights(model, payload["model"], last)
            optimizer.load_state_dict(payload["optimizer"])
            self.epoch = int(payload["epoch"])
            self.best_score = float(payload["best_score"])
            self.history = list(payload["history"])
            for split, reasons in payload.get("failed_slides", {}).items():
                self.failures[split].merge(reasons)
            if self.fabric.is_global_zero:
                self.folder.record("resume with changes" if changes else "resume", epoch=self.epoch,
                                   **({"changes": changes} if changes else {}))
        else:
            self.warmup_losses = self._warm_up_heads(model)
            if self.fabric.is_global_zero:  # after the warm-up: a run stopped there leaves no folder
                self.folder.record("start", epoch=0)
        self.model, self.optimizer = self.fabric.setup(model, optimizer)

    def _resume_changes(self, payload: dict[str, Any], last: Path, allow: bool) -> dict[str, list[Any]]:
        """Refuse another model always, other changes unless ``allow``; return the changes accepted."""
        saved = config_dict(checkpoint_config(payload, last))
        current = config_dict(self.cfg)
        diff = _model_diff(saved["model"], current["model"])
        if diff:
            raise ConfigError(f"{last}: checkpoint was made for another model config "
                              f"(differs in model.{', model.'.join(diff)}); train into a new folder "
                              f"or remove {self.run_dir} to start over")
        changes = resume_changes(saved, current, payload.get("data"), self.data)
        if changes and not allow:
            raise refuse_changes(last, changes, self.folder.history)
        return changes

    def _echo(self, line: str) -> None:
        if self.fabric.is_global_zero:
            tqdm.write(line)

    @property
    def module(self) -> MagNet:
        """The MagNet itself, without Fabric's (and DDP's) wrappers: for inference, diagnostics, saving."""
        module = self.model.module if hasattr(self.model, "module") else self.model
        assert isinstance(module, MagNet)
        return module

    def _warm_up_heads(self, model: MagNet) -> list[float]:
        """Head warm-up on cached root views before epoch 1 (``optim.head_warmup_steps``;
        magnet.training.warmup).

        Runs before Fabric's setup, on the device the model will train on: at 56 x 56 views a step costs
        milliseconds on a CPU, but at 224 x 224 the CPU took 2.5 s a step on a GPU machine
        (docs/BENCHMARKS.md, "Third GPU run"). Under DDP every rank computes the same steps from the same
        seed and setup broadcasts rank 0's weights anyway. A slide whose root view cannot be read is a
        training failure like any other (logged, left out, counted).
        """
        optim = self.cfg.optim
        layer = model.layers[0]
        assert isinstance(layer, MagnifyingLayer)
        if optim.head_warmup_steps <= 0 or not layer.zoom.uses_heads:  # the controls' layers use no heads
            return []
        failures = self.failures["train"]
        views, labels = [], []
        for row in self.train_rows:
            try:
                views.append(read_root_view(self.pool.get(row.slide), self.cfg.model.view_size))
                labels.append(row.label)
            except SlideError as exc:
                failures.add(row.slide, str(exc))
                failures.check()
        if not views:
            raise MagnetError(f"{self.cfg.data.manifest or 'manifest'}: no training slide could be read")
        device = self.fabric.device
        layer.to(device)  # the same Parameter objects: the optimizer built on them stays valid
        show = self.show_progress and self.fabric.is_global_zero
        with tqdm(total=optim.head_warmup_steps, desc="head warm-up", unit="step", disable=not show,
                  leave=False) as bar:
            def step(loss: float) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")

            losses = warm_up_heads(layer, torch.stack(views).to(device), torch.tensor(labels, device=device),
                                   steps=optim.head_warmup_steps, batch_size=optim.head_warmup_batch,
                                   lr=optim.head_lr or optim.lr, generator=epoch_generator(self.cfg.seed, -1),
                                   progress=step)
        if show:
            tail = sum(losses[-50:]) / len(losses[-50:])
            print(f"magnet: head warm-up, {len(losses)} steps on {len(views)} root views: "
                  f"loss {losses[0]:.3f} -> {tail:.3f} (mean of the last 50)")
        return losses

    def _read_manifest(self) -> list[ManifestRow]:
        if not self.cfg.data.manifest:
            raise ConfigError("data.manifest is not set: give a manifest CSV (--set data.manifest=PATH)")
        manifest = read_manifest(self.cfg.data.manifest, skip_bad=self.cfg.data.skip_bad)
        for row, reason in manifest.skipped:
            print(f"magnet: skipped manifest row {row}: {reason}")
        return list(manifest.rows)

    def _check_rows(self) -> None:
        where = self.cfg.data.manifest or "manifest"
        if not self.train_rows:
            raise MagnetError(f"{where}: no rows in split '{self.cfg.data.train_split}'")
        labels = {r.label for r in self.train_rows}
        if labels != {0, 1}:
            missing = "positives" if 1 not in labels else "negatives"
            raise MagnetError(f"{where}: the training split has no {missing}; both classes are needed")

    # --- one epoch ----------------------------------------------------------------------------
    def _epoch_batches(self, epoch: int) -> tuple[list[list[ManifestRow]], list[list[int]]]:
        g = epoch_generator(self.cfg.seed, epoch)
        order = torch.randperm(len(self.train_rows), generator=g).tolist()
        maps = torch.randint(NUM_DIHEDRAL, (len(order),), generator=g).tolist()
        if not self.cfg.data.augment:
            maps = [0] * len(order)
        world, rank = self.fabric.world_size, self.fabric.global_rank
        per_rank = len(order) // world  # equal step counts on every rank (DDP needs it)
        mine = order[rank * per_rank : (rank + 1) * per_rank]
        mine_maps = maps[rank * per_rank : (rank + 1) * per_rank]
        bs = self.cfg.optim.batch_size
        rows = [[self.train_rows[i] for i in mine[s : s + bs]] for s in range(0, len(mine), bs)]
        dmaps = [mine_maps[s : s + bs] for s in range(0, len(mine), bs)]
        return rows, dmaps

    def _forward(self, rows: list[ManifestRow], maps: list[int], epoch: int, step: int) -> Any:
        """Forward and loss of one batch, leaving out the slides that fail to read.

        Returns ``(rows, sources, out, losses)`` for the slides that remain (``rows`` empty when none
        does). A failed slide is recorded, and the batch is run again without it: from a fresh noise
        generator, so the remaining slides train exactly as they would have had the bad one been known
        (a resumed run, which knows it from its checkpoint, stays equal to an uninterrupted one).

        Under DDP there is no second try: each forward of the wrapped model takes part in collectives (the
        buffer broadcast), so a rank that ran it twice would pair them with the other ranks' next step.
        The step is skipped by every rank instead, and from the next epoch the bad slide is left out before
        the forward, so the rest of its batch trains then.
        """
        cfg, device, failures = self.cfg, self.fabric.device, self.failures["train"]
        kept = [(r, m) for r, m in zip(rows, maps, strict=True) if r.slide not in failures]
        while kept:
            rows, maps = [r for r, _ in kept], [m for _, m in kept]
            noise = epoch_generator(cfg.seed, epoch, salt=step + 1)
            try:
                sources = self.jitters.wrap([self.pool.get(r.slide) for r in rows],
                                            [self.slide_ids[r.slide] for r in rows], epoch)
                roots = torch.stack([dihedral_matrix(m) for m in maps]).to(device)
                labels = torch.tensor([float(r.label) for r in rows], device=device)
                final = None if self.oracle is None else self.oracle.rois(
                    [r.slide for r in rows], sources, cfg.model.patches_at(cfg.model.num_layers), roots,
                    noise)
                out = self.model(sources, roots, noise, final_rois=final,
                                 cell_logits=cfg.loss.wants_cell_logits)
                return rows, sources, out, magnet_loss(out, labels, cfg.loss)
            except NonFiniteError as exc:
                raise non_finite_forward(exc, epoch=epoch, step=step) from None
            except SlideError as exc:
                culprit = slide_identity(exc.path)
                bad = [r for r in rows if r.slide == exc.path or slide_identity(r.slide) == culprit]
                if not bad:  # an error that names no slide of the batch: lose the batch, blame no slide
                    tqdm.write(f"magnet: skipped a batch: {exc}")
                    return [], [], None, None
                failures.add(bad[0].slide, str(exc))
                if self.fabric.world_size > 1:
                    return [], [], None, None
                kept = [(r, m) for r, m in kept if r is not bad[0]]
        return [], [], None, None

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, fabric = self.cfg, self.fabric
        factor = lr_factor(epoch, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        batches, dmaps = self._epoch_batches(epoch)
        self.model.train()
        totals = {"loss": 0.0, "final": 0.0, "aux": 0.0, "paradoxical": 0.0, "head_mil": 0.0,
                  "head_value": 0.0}
        seen, skipped, t0 = 0, 0, time.perf_counter()
        diagnostics = ZoomDiagnostics(cfg.model.num_layers, self.outlines, self.lesion_areas)
        bar = tqdm(total=sum(len(b) for b in batches), desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
                   unit="slide", disable=not (self.show_progress and fabric.is_global_zero), leave=False)
        failures = self.failures["train"]
        known = len(failures)  # failures known to every rank when the epoch starts
        self.optimizer.zero_grad(set_to_none=True)
        pending: list[float] = []  # losses of the batches since the last optimiser step
        for step, (batch, maps) in enumerate(zip(batches, dmaps, strict=True)):
            rows, sources, out, losses = self._forward(batch, maps, epoch, step)
            empty, failed = not rows, len(failures)
            if fabric.world_size > 1:
                # Under DDP every rank must skip the same steps: a rank that back-propagated while another
                # skipped would pair its gradient all-reduce with the other's next step (or hang at the end).
                # The failures found this epoch are summed so that every rank applies the same limit.
                flags = torch.tensor([float(empty), float(failed - known)], device=fabric.device)
                flags = fabric.all_reduce(flags, reduce_op="sum")  # type: ignore[assignment]
                empty, failed = bool(flags[0] > 0), known + int(flags[1])
            failures.check(failed)
            if empty:
                skipped += 1
                bar.update(len(batch))
                continue
            diagnostics.add_forward(out, [r.slide for r in rows], [s.slide_size for s in sources])
            loss_value = float(losses.total.detach())
            pending.append(loss_value)
            fabric.backward(losses.total / cfg.optim.grad_accum)
            if (step + 1) % cfg.optim.grad_accum == 0 or step + 1 == len(batches):
                diagnostics.add_gradients(self.module)
                if cfg.optim.grad_clip > 0:
                    fabric.clip_gradients(self.model, self.optimizer, max_norm=cfg.optim.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                check_step(pending, self.module, epoch=epoch, step=step)
                pending.clear()
            n = len(rows)
            seen += n
            totals["loss"] += loss_value * n
            totals["final"] += float(losses.final.detach()) * n
            totals["aux"] += float(sum(v.detach() for v in losses.aux.values())) * n
            totals["paradoxical"] += float(losses.paradoxical.detach()) * n
            totals["head_mil"] += float(losses.head_mil.detach()) * n
            totals["head_value"] += float(losses.head_value.detach()) * n
            bar.update(len(batch))
            bar.set_postfix(loss=f"{totals['loss'] / seen:.3f}",
                            slides_s=f"{seen / (time.perf_counter() - t0):.2f}")
        bar.close()
        self._share_failures()
        seconds = time.perf_counter() - t0
        avg = {k: (v / seen if seen else math.nan) for k, v in totals.items()}
        return {"lr": cfg.optim.lr * factor, "train_loss": avg["loss"], "train_final": avg["final"],
                "train_aux": avg["aux"], "train_paradoxical": avg["paradoxical"],
                "train_head_mil": avg["head_mil"], "train_head_value": avg["head_value"],
                "train_slides_per_s": seen * self.fabric.world_size / max(seconds, 1e-9),
                "skipped_batches": skipped, "failed_slides": len(failures), **diagnostics.means()}

    def _share_failures(self) -> None:
        """Under DDP, every rank learns the failed training slides the others found this epoch."""
        if self.fabric.world_size == 1:
            return
        gathered: list[Any] = [None] * self.fabric.world_size
        torch.distributed.all_gather_object(gathered, self.failures["train"].reasons)
        for reasons in gathered:
            self.failures["train"].merge(reasons)

    def _validate(self) -> tuple[float, int]:
        if not self.val_rows:
            return math.nan, 0
        failures = self.failures["validation"]
        rows = [r for r in self.val_rows if r.slide not in failures]
        preds = predict_slides(self.module, [r.slide for r in rows], self.pool,
                               batch_size=self.cfg.optim.batch_size, device=self.fabric.device,
                               oracle=self.oracle, seed=self.cfg.seed)
        for pred in preds:
            if pred.unreadable:
                failures.add(pred.slide, pred.error)
        failures.check()
        pairs = [(r.label, p.probability) for r, p in zip(rows, preds, strict=True) if not p.error]
        if not pairs or len({lab for lab, _ in pairs}) < 2:
            return math.nan, len(pairs)
        labels, scores = zip(*pairs, strict=True)
        return float(auroc(list(labels), list(scores))), len(pairs)

    # --- the run ------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg, fabric = self.cfg, self.fabric
        if fabric.is_global_zero:
            save_config(cfg, self.run_dir / "config.yaml")
        log = RunLog(self.run_dir, cfg.model.num_layers, echo=self.show_progress) if fabric.is_global_zero \
            else None
        start = time.perf_counter()
        interrupted, first_epoch = False, self.epoch
        try:
            for epoch in range(self.epoch, cfg.optim.epochs):
                row: dict[str, Any] = {"epoch": epoch + 1, **self._train_epoch(epoch)}
                due = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.optim.epochs
                row["val_auroc"], row["val_n"] = self._validate() if due else (math.nan, 0)
                row["minutes"] = (time.perf_counter() - start) / 60
                for failures in self.failures.values():
                    if failures.summary(epoch + 1):
                        self._echo(failures.summary(epoch + 1))
                self.history.append(row)
                self.epoch = epoch + 1
                improved = not math.isnan(row["val_auroc"]) and row["val_auroc"] > self.best_score
                if improved:
                    self.best_score = row["val_auroc"]
                if log is not None:
                    self._save(improved)
                    log.epoch_done(self.history)
                fabric.barrier()
            # After the last epoch, when this call trained (a resume of a finished run does not refit again)
            if cfg.refit.epochs and self.epoch == cfg.optim.epochs and self.epoch > first_epoch:
                if fabric.is_global_zero:
                    self._refit_readout()
                fabric.barrier()
        except KeyboardInterrupt:
            interrupted = True
            if fabric.is_global_zero:
                print(f"magnet: interrupted during epoch {self.epoch + 1}; the checkpoint of epoch "
                      f"{self.epoch} in {self.run_dir / 'last.ckpt'} is intact (continue with --resume)")
        finally:
            if log is not None:
                log.close()
            self.pool.close()
            self.folder.release()
        return TrainResult(self.run_dir, self.epoch, self.best_score, self.history, interrupted)

    def _refit_readout(self) -> None:
        """The readout of ``best.ckpt`` fitted again on its final-patch features (``readout_refit``)."""
        if not self.val_rows:
            self._echo("readout refit: skipped (no validation slides to choose its epoch)")
            return
        usable = {split: [r for r in rows if r.slide not in self.failures[split]]
                  for split, rows in (("train", self.train_rows), ("validation", self.val_rows))}
        try:
            result = refit_run(self.run_dir, usable["train"], usable["validation"], self.pool,
                               device=self.fabric.device, oracle=self.oracle, echo=self._echo)
        except MagnetError as exc:  # e.g. one label among the validation slides: training's outputs stand
            self._echo(f"readout refit: skipped ({exc})")
            return
        self.folder.record("readout refit", **asdict(result))
        self._echo(result.summary(self.run_dir / "best.ckpt"))

    def _save(self, improved: bool) -> None:
        payload = {
            "config": config_dict(self.cfg),
            "model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "best_score": self.best_score,
            "history": self.history,
            "data": self.data,  # what resume compares (run_folder.data_fingerprint)
            "failed_slides": {split: dict(f.reasons) for split, f in self.failures.items()},
        }
        save_checkpoint(self.run_dir / "last.ckpt", payload)
        if improved or not (self.run_dir / "best.ckpt").exists():
            save_checkpoint(self.run_dir / "best.ckpt", payload)
            # A new best: the unrefitted copy an earlier readout refit kept is stale now.
            (self.run_dir / TRAINED_CHECKPOINT).unlink(missing_ok=True)


def train(cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False, allow_changes: bool = False,
          show_progress: bool = True) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (``resume`` continues from ``run_dir/last.ckpt``; ``allow_changes``
    accepts a changed data, seed, optimiser or loss config there)."""
    trainer = Trainer(cfg, run_dir, resume=resume, allow_changes=allow_changes, show_progress=show_progress)
    return trainer.fit()
