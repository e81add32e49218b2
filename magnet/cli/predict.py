"""``magnet predict CHECKPOINT [SLIDE|FOLDER|URI ...] [--manifest M.csv] [--out FOLDER]``: predict a cohort.

Inputs are any mix of slide files, folders (searched at any depth for the slide file types) and URIs, plus
the rows of a manifest (``magnet.evaluation.cohort_inputs``); each slide is predicted once.

With ``--out FOLDER`` (``magnet.evaluation.cohort_store``): ``predictions.csv`` (slide, probability,
seconds, error) and ``slides/<name>.json`` (the ROIs of every layer and the running probabilities) are
written as each slide finishes, so a kill loses at most the slides in flight; a rerun skips the slides
done (and those that failed, unless ``--retry-failed``). A progress bar shows slides per second and the
time left; failures are listed as they happen and a summary line ends the run. Without ``--out`` the JSON
list of every slide's prediction goes to standard output at the end and one status line per slide to
standard error as it finishes.

Either way a slide that cannot be read is a failure (its one-line reason recorded) and the run goes on; the
exit status is 1 when a slide of the run has failed. The checkpoint, the inputs, the output folder and
``--device`` are checked before any slide is read; each is refused in one line.

Several processes share a cohort (``magnet.evaluation.ranks``): ``--devices N`` starts N on this machine
(``--num-nodes M`` for M machines), and under ``torchrun`` or SLURM's ``srun`` the processes the launcher
started share it without options. Each predicts its share of the slides on its own device; rank 0 gathers
the inputs, plans, merges the rows into ``predictions.csv``, prints the summary and returns the exit status
(the other ranks return 0). Several processes need ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from magnet import strict_json
from magnet.domains import AtLeast, arg_type


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="probability and ROIs per slide, over a cohort (CSV + JSON)")
    p.add_argument("checkpoint")
    p.add_argument("slides", nargs="*",
                   help="slide files, folders (searched at any depth) or URIs (synth:...)")
    p.add_argument("--manifest", default=None, help="also predict the slides of this manifest CSV")
    p.add_argument("--out", default="", help="output folder: predictions.csv and slides/<name>.json, written "
                                             "as each slide finishes; a rerun skips the slides done "
                                             "(default: a JSON list on standard output)")
    p.add_argument("--retry-failed", action="store_true",
                   help="with --out: predict again the slides that failed in an earlier run")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N, mps (default cpu)")
    p.add_argument("--batch-size", type=arg_type(int, AtLeast(1)), default=1,
                   help="slides per forward pass (default 1)")
    p.add_argument("--workers", type=arg_type(int, AtLeast(1)), default=2,
                   help="threads that open slides and read their root views ahead (default 2; unused "
                        "with --prefetch 0)")
    p.add_argument("--prefetch", type=arg_type(int, AtLeast(0)), default=2,
                   help="slides opened and read ahead while the model computes; 0: none (default 2)")
    p.add_argument("--in-flight", type=arg_type(int, AtLeast(1)), default=1,
                   help="batches predicted at once, each on its own thread, so that one's reads overlap "
                        "another's compute; they share the recipe's reader threads (default 1; 2 on a CPU: "
                        "×1.4 slides/s for a small model on 2 cores)")
    p.add_argument("--devices", type=arg_type(int, AtLeast(1)), default=None,
                   help="with --out: processes on this machine, one per device of --device's type, "
                        "sharing the slides (default: as torchrun or srun started them, else 1)")
    p.add_argument("--num-nodes", type=arg_type(int, AtLeast(1)), default=None,
                   help="with --out: machines running --devices processes each (default: as torchrun or srun "
                        "started them, else 1)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: the classifier CNN in bfloat16 (GPUs, CPUs with AVX512-BF16/AMX; "
                        "probabilities move by its rounding); default fp32")
    p.add_argument("--stain-norm", choices=("none", "reinhard"), default=None,
                   help="stain normalisation of every read (default: the checkpoint's data.stain_norm); "
                   "reinhard moves each slide's colours to the reference statistics (Reinhard et al. 2001)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from magnet.errors import MagnetError
    from magnet.evaluation.cohort_inputs import gather_slides
    from magnet.inference.device import resolve_device

    device = resolve_device(args.device)
    if args.retry_failed and not args.out:
        raise MagnetError("--retry-failed needs --out (the folder whose failed slides to retry)")
    if args.out and args.out.lower().endswith((".json", ".csv")):
        raise MagnetError(f"{args.out}: --out names a folder (predictions.csv and slides/*.json are written "
                          "in it); give a folder name")
    if not args.out:
        _refuse_several_processes(args)
        slides = gather_slides(args.slides, args.manifest)
        return _stdout(args, slides, {**_speed(args), "device": device})
    from magnet.evaluation.ranks import start_ranks

    ranks = start_ranks(device, args.devices, args.num_nodes)
    # Rank 0's list is the cohort (the other ranks get their shares from its plan): one scan of the folders.
    slides = ranks.from_leader(lambda: gather_slides(args.slides, args.manifest))
    return _cohort(args, slides, {**_speed(args), "ranks": ranks})


def _speed(args: argparse.Namespace) -> dict[str, Any]:
    """The options of how slides are read and computed: the speed of a run, and for --precision and
    --stain-norm the pixels or the rounding of its numbers."""
    return {"batch_size": args.batch_size, "workers": args.workers, "ahead": args.prefetch,
            "in_flight": args.in_flight, "precision": args.precision, "stain_norm": args.stain_norm}


def _refuse_several_processes(args: argparse.Namespace) -> None:
    """Without --out there is no folder to share: one process, whatever the options or the launcher say."""
    from magnet.errors import MagnetError
    from magnet.evaluation.ranks import requested_world

    if requested_world(args.devices, args.num_nodes) is not None:
        raise MagnetError("several processes (--devices, --num-nodes, torchrun or srun) share a cohort "
                          "through its --out folder; give --out")


def _stdout(args: argparse.Namespace, slides: list[str], options: dict[str, Any]) -> int:
    from magnet.evaluation.predict import predict
    from magnet.slides.noise import terminal_stderr

    def show(result: dict[str, Any]) -> None:
        status = f"error: {result['error']}" if result["error"] else f"p={result['probability']:.3f}"
        print(f"{result['slide']}: {status}  {result['seconds']:.2f} s", file=terminal_stderr())

    results = predict(args.checkpoint, slides, on_result=show, **options)
    print(strict_json.dumps(results, indent=1))
    return 1 if any(r["error"] for r in results) else 0


def _cohort(args: argparse.Namespace, slides: list[str], options: dict[str, Any]) -> int:
    from tqdm import tqdm

    from magnet.evaluation.predict import CohortRun, predict_cohort
    from magnet.slides.noise import terminal_stderr

    done: list[dict[str, Any]] = []

    def show(result: dict[str, Any]) -> None:
        done.append(result)
        if result["error"]:
            error = result["error"]  # a slide's error names it; the model's errors do not
            line = error if error.startswith(f"{result['slide']}: ") else f"{result['slide']}: {error}"
            tqdm.write(f"error: {line}", file=terminal_stderr())

    try:
        run: CohortRun = predict_cohort(args.checkpoint, slides, args.out, retry_failed=args.retry_failed,
                                        show_progress=not args.no_progress, on_result=show, **options)
    except KeyboardInterrupt:
        if done:
            print(f"magnet: {len(done)} slide{'' if len(done) == 1 else 's'} done in this run; their "
                  f"predictions are in {args.out}",
                  file=sys.stderr)
        raise
    if not run.ranks.is_leader:
        return 0  # rank 0 reports for the run (and a rank ending in error would get its launcher to kill it)
    print(run.summary())
    failed_before = len(run.plan.failed)
    return 1 if run.failed or failed_before else 0
