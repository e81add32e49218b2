"""Does a learned zoom predict the same on any thread count once its boxes sit on their parents' pixel grid?

A learned zoom's boxes amplify rounding from layer to layer: the same checkpoint evaluated on one torch
thread and on two gives the same AUROCs to 0.017 but moves single slides' probabilities by up to 0.53
(docs/BENCHMARKS.md, "One checkpoint on one thread and on two"). ``model.box_grid`` (docs/method.md §9)
puts each learned box's centre on its parent view's pixel grid in evaluation, which should stop the chain.
It changes nothing in training, so a trained checkpoint can be evaluated with it: this writes a copy of
``CHECKPOINT`` with the key on, to be evaluated on each thread count and compared with
``bench/paired_auroc.py`` and with the checkpoint as it was::

    .venv/bin/python bench/box_grid.py RUN/best.ckpt /tmp/grid.ckpt
    OMP_NUM_THREADS=1 .venv/bin/magnet evaluate /tmp/grid.ckpt TEST/manifest.csv --split test --out G1
    OMP_NUM_THREADS=2 .venv/bin/magnet evaluate /tmp/grid.ckpt TEST/manifest.csv --split test --out G2

``--off`` writes the copy with the key off instead: a run trained with it, evaluated without it, paired with
its own evaluation.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from magnet.errors import MagnetError
from magnet.training.checkpoints import checkpoint_config, config_dict, load_checkpoint, save_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a trained learned-zoom checkpoint (best.ckpt)")
    parser.add_argument("out", help="where the copy with model.box_grid on (or off) is written")
    parser.add_argument("--off", action="store_true", help="write the copy with model.box_grid off")
    args = parser.parse_args()
    box_grid = not args.off
    try:
        payload = load_checkpoint(args.checkpoint)
        config = checkpoint_config(payload, args.checkpoint)
        if config.model.zoom != "learned":
            raise MagnetError(f"{args.checkpoint}: zoom={config.model.zoom!r}; box_grid moves learned boxes "
                              "only")
        payload["config"] = config_dict(replace(config, model=replace(config.model, box_grid=box_grid)))
        save_checkpoint(args.out, payload)
    except MagnetError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{args.out}: {args.checkpoint} with model.box_grid {'on' if box_grid else 'off'}")


if __name__ == "__main__":
    main()
