"""What a run leaves to read while it trains: ``metrics.csv``, TensorBoard scalars, one line per epoch.

``metrics.csv`` has one row per epoch (``METRIC_FIELDS``, then the per-layer zoom diagnostics); it is
rewritten whole each epoch from the history the checkpoint carries, so a resumed run's CSV matches its
checkpoint.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from magnet.atomic import atomic_write_text
from magnet.training.diagnostics import diagnostic_fields

__all__ = ["METRIC_FIELDS", "RunLog"]

METRIC_FIELDS = (
    "epoch", "lr", "train_loss", "train_final", "train_aux", "train_paradoxical", "train_head_mil",
    "train_head_value", "train_slides_per_s", "skipped_batches", "failed_slides", "val_auroc", "val_n",
    "minutes",
)


class RunLog:
    """Writes a run's ``metrics.csv`` and TensorBoard events in ``run_dir``; ``close()`` when done."""

    def __init__(self, run_dir: Path, num_layers: int, *, echo: bool = True) -> None:
        self.run_dir = run_dir
        self.fields = METRIC_FIELDS + diagnostic_fields(num_layers)
        self.echo = echo
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def epoch_done(self, history: Sequence[dict[str, Any]]) -> None:
        """Record the last row of ``history`` (the CSV gets the whole history)."""
        text = io.StringIO()
        out = csv.DictWriter(text, fieldnames=self.fields, extrasaction="ignore")
        out.writeheader()
        out.writerows(history)
        atomic_write_text(self.run_dir / "metrics.csv", text.getvalue(), newline="")
        row = history[-1]
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float) and not math.isnan(value):
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()
        if self.echo:
            tqdm.write(f"epoch {row['epoch']}: loss {row['train_loss']:.4f}  val AUROC "
                       f"{row['val_auroc']:.3f} (n={row['val_n']})  {row['train_slides_per_s']:.2f} slides/s")

    def close(self) -> None:
        self.writer.close()
