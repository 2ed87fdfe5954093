"""Train a semantic-segmentation model on Cityscapes, on one device, the GPUs of one node
(MirroredStrategy) or several nodes (MultiWorkerMirroredStrategy from TF_CONFIG or SLURM).

Options left out take the model's recipe (models.get_info(name).recipe). -b is the batch per
replica; the global batch is -b x replicas and, with --lr-scaling linear (default), the learning
rates are multiplied by the number of replicas. The run writes into --output-dir (default
runs/MODEL): weights-[epoch]-[val-acc]-[val-loss]-[datetime].weights.h5 for the best and the last
epoch, copied to best.weights.h5 and last.weights.h5, the training state beside each (.state/),
log.csv, TensorBoard logs (logs/) and val_scores.json. Rerunning the same command after a crash
continues from the last completed epoch; a command with other settings (batch, schedule, size,
data, ...) is refused, naming them (--output-dir for a new run, -r FILE to continue anyway).
SIGTERM (SLURM's preemption and time-limit signal, or kill -TERM) stops the run after its current
step with the training state saved (preempted.state/), exit status 75; so does a first Ctrl-C
(exit status 130; a second one stops at once). Rerunning the same command continues from that
step. In a terminal the epochs show Keras' progress bar; in a job log (output
not a terminal), one plain line per epoch (and every --log-every N steps).

Before each validation and checkpoint, precise batch norm (--precise-bn N) sets the batch-norm
moving statistics to the average statistics of N training images under the current weights, so
the saved model predicts in inference mode as well as it trains. The validation is scored as
evaluate.py scores: class scores resized to the full-resolution ground truth, official mIoU.

Examples:
  python train.py -m fastscnn --synthetic -t 256,512 -b 4 -e 10
  python train.py -m deeplabv3+ --backbone xception -p /data/cityscapes -r runs/deeplabv3+/last.weights.h5
  python train.py -m fastscnn -f sgd --momentum 0.9        (learning-rate finder)
  srun python train.py -m fastscnn -p /data/cityscapes     (see scripts/slurm_train.sh)
"""

from __future__ import annotations

import argparse
import math
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from datasets.options import add_dataset_args, dataset_root
from utils.cli import (
    guard,
    interrupted,
    make_parser,
    non_negative_float,
    non_negative_int,
    positive_int,
    quiet_tensorflow,
)

if TYPE_CHECKING:  # named in annotations only; imported after quiet_tensorflow where used
    import tensorflow as tf

    from training.config import TrainConfig
    from training.distribute import DistributeInfo


def _float(text: str) -> float:
    """Argparse type: any finite number (range checks come later with a clear message)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The train.py argument parser."""
    # light modules only: --help and usage errors need no TensorFlow
    from models.info import LOSSES
    from models.options import add_model_args
    from training.options import OPTIMIZERS
    from utils.class_options import add_classes_arg

    parser = make_parser(__doc__)

    add_model_args(parser)
    add_dataset_args(parser, coarse=True)
    add_classes_arg(
        parser,
        "the model gets that many outputs, the label ids are mapped onto them, and the "
        "weights files record it for predict.py, evaluate.py and convert_to_onnx.py "
        "(default: cityscapes19)",
    )
    _add_run_args(parser, OPTIMIZERS)
    _add_optimizer_args(parser, OPTIMIZERS)
    _add_loss_and_output_args(parser)

    group = parser.add_argument_group("loss")
    group.add_argument(
        "--loss",
        choices=LOSSES,
        default=None,
        help="loss of the main output: ce (cross-entropy) or ohem (online hard example mining: "
        "the mean cross-entropy of the pixels predicted below --ohem-thresh, at least the "
        "--ohem-min-kept hardest); auxiliary heads keep their own losses (default: the "
        "model's recipe: --show-recipe prints it)",
    )
    group.add_argument(
        "--ohem-thresh",
        type=_float,
        default=None,
        help="--loss ohem: keep the pixels whose predicted probability of their true class is "
        "below this, in (0, 1] (default: the model's recipe: 0.9, the PIDNet and DDRNet "
        "papers'; 0.7 for bisenetv2, its reference's)",
    )
    group.add_argument(
        "--ohem-min-kept",
        type=positive_int,
        default=None,
        help="--loss ohem: keep at least this many pixels of each replica's batch, the hardest "
        "(default: the model's recipe: 131072, the PIDNet and DDRNet references' per-GPU value "
        "for 6 crops of 1024x1024, about 2%% of their pixels; bisenetv2 524288, 1/16 of its "
        "recipe's 16 x 512x1024; it does not scale with -t or -b: scale it with the pixels per replica "
        "to keep that share; each replica mines its own batch, as the references do per GPU)",
    )
    return parser


def _add_run_args(parser: argparse.ArgumentParser, optimizers: tuple[str, ...]) -> None:
    """Resume, batch, epochs, precision, XLA and the learning-rate finder."""
    parser.add_argument(
        "-r",
        "--resume",
        default=None,
        help="resume from a run's last.weights.h5 / best.weights.h5 or a "
        "weights-[epoch]-[val-acc]-[val-loss]-[datetime].weights.h5 file (with its .state/ "
        "folder: optimizer and schedule position too; without it: weights and epoch from the "
        "name), also with settings other than the run's (the changes are listed)",
    )
    parser.add_argument(
        "-b",
        "--batch",
        "--batch-size",
        dest="batch",
        type=positive_int,
        default=None,
        help="batch size per replica (default: the recipe's)",
    )
    parser.add_argument(
        "-e", "--epochs", type=positive_int, default=None, help="epochs (default: the recipe's)"
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="mixed_float16 on GPU (with loss scaling), mixed_bfloat16 on CPU",
    )
    parser.add_argument("--xla", action="store_true", help="compile the training step with XLA")
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="the same losses and weights run after run: TensorFlow's op determinism and no "
        "grappler (its graph rewrites differ from process to process), besides the seeds every "
        "run has (--seed); no speed cost measured on a 2-core CPU (README, 'Reproducibility')",
    )
    parser.add_argument(
        "--show-recipe",
        action="store_true",
        help="print the settings of -m MODEL's recipe (optimizer, rates, crop, batch, epochs, "
        "loss, batch norm) that the options left unset take, and exit",
    )
    parser.add_argument(
        "--sync-bn",
        action="store_true",
        help="batch-norm statistics over the global batch of all GPUs and workers while "
        "training (PyTorch's SyncBatchNorm, what the HRNet, PIDNet and DDRNet recipes use on "
        "several GPUs); default: each replica normalises over its own images",
    )
    parser.add_argument(
        "--bn-momentum",
        type=_float,
        default=None,
        help="batch-norm momentum, Keras' convention (moving = m * moving + (1 - m) * batch; "
        "PyTorch's 0.1 is 0.9 here) for every BatchNormalization layer (default: the value "
        "of the implementation that reproduces the model's published result: --show-recipe "
        "prints it; docs/training.md, 'Batch norm')",
    )
    parser.add_argument(
        "--precise-bn",
        type=non_negative_int,
        default=256,
        metavar="N",
        help="before each validation and checkpoint, set the batch-norm moving statistics "
        "to the average batch statistics of N training images (at most one pass over the "
        "training set) with the current weights; 0 turns it off",
    )
    parser.add_argument(
        "--log-every",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="when standard output is not a terminal (a job log), print a progress line every "
        "N steps besides the one per epoch; in a terminal the progress bar shows every step "
        "(default: 0, one line per epoch)",
    )
    parser.add_argument(
        "-f",
        "--lrfinder",
        choices=optimizers,
        default=None,
        help="run the learning-rate finder with this optimizer instead of "
        "training; writes a plot, a CSV and the suggested --min-lr/--max-lr",
    )
    parser.add_argument(
        "--finder-steps",
        type=positive_int,
        default=100,
        help="maximum steps of the learning-rate finder's sweep",
    )


def _add_optimizer_args(parser: argparse.ArgumentParser, optimizers: tuple[str, ...]) -> None:
    """The optimizer, its learning rate and the schedule."""
    parser.add_argument(
        "--optimizer",
        choices=optimizers,
        default=None,
        help="optimizer for training (default: the recipe's)",
    )
    parser.add_argument(
        "--schedule",
        choices=("polynomial", "cyclic"),
        default=None,
        help="learning-rate schedule, stepped per optimizer step (default: the recipe's)",
    )
    parser.add_argument(
        "--momentum",
        type=_float,
        default=None,
        help="momentum of sgd, sgd_nesterov and rmsprop, also for -f (default: the recipe's)",
    )
    parser.add_argument(
        "-l",
        "--learning-rate",
        type=_float,
        default=None,
        help="base learning rate: the polynomial peak and the cyclic maximum "
        "unless --max-lr is given (default: the recipe's)",
    )
    group = parser.add_argument_group("schedule")
    group.add_argument(
        "--max-lr",
        type=_float,
        default=None,
        help="polynomial peak / cyclic maximum (default: -l); for -f the end of "
        "the sweep (default 100)",
    )
    group.add_argument(
        "--min-lr",
        type=_float,
        default=None,
        help="polynomial end / cyclic minimum (default: 0 / -l divided by 10); "
        "for -f the start of the sweep (default 1e-6)",
    )
    group.add_argument(
        "--power", type=_float, default=None, help="polynomial decay power (default: the recipe's)"
    )
    group.add_argument(
        "--cycle",
        type=positive_int,
        default=None,
        help="cyclic: optimizer steps per half cycle (default: an eighth of the "
        "run's steps, i.e. four cycles)",
    )
    group.add_argument(
        "--warmup-epochs",
        type=non_negative_float,
        default=0.0,
        help="polynomial: epochs of linear warm-up from --min-lr to the peak",
    )
    group.add_argument(
        "--lr-scaling",
        choices=("linear", "none"),
        default="linear",
        help="linear: multiply the rates by the number of replicas (they are "
        "given for one replica's batch -b); none: use them as given",
    )


def _add_loss_and_output_args(parser: argparse.ArgumentParser) -> None:
    """Weight decay, class weights, backbone, seed, output folder, validation, distribution."""
    parser.add_argument(
        "--weight-decay",
        type=non_negative_float,
        default=None,
        help="L2 weight decay on kernels, not on depthwise kernels, biases or "
        "batch norm (default: the recipe's)",
    )
    parser.add_argument(
        "--class-weights",
        default=None,
        help="JSON file with a list of per-class loss weights, one per class of --classes "
        "(19 for cityscapes19; default: none)",
    )
    parser.add_argument(
        "--freeze-backbone",
        action="store_true",
        help="train everything but the pretrained backbone",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="backbone weights: 'imagenet' (Keras cache ~/.keras/models) or a "
        "file (default: random initialisation)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of initialisation, shuffling and augmentation"
    )
    parser.add_argument(
        "--output-dir", default=None, help="folder for checkpoints and logs (default: runs/MODEL)"
    )
    parser.add_argument(
        "--val-every",
        type=positive_int,
        default=1,
        help="validate every N epochs (and after the last)",
    )
    parser.add_argument(
        "--steps-per-epoch",
        type=positive_int,
        default=None,
        help="optimizer steps per epoch (default: training images // global batch; the "
        "shuffled training data repeats, so more is fine)",
    )
    parser.add_argument(
        "--distribute",
        choices=("auto", "none", "mirrored", "multiworker"),
        default="auto",
        help="auto: multiworker under TF_CONFIG or a SLURM step of several "
        "tasks, mirrored with several GPUs, else none",
    )


def _print_scores(scores: dict) -> None:
    """The per-class IoU table of the last validation."""
    # after parsing: keeps --help and usage errors instant
    from utils.labels import CLASS_NAMES

    print(f"\n{'class':<16}{'IoU':>8}")
    for name, value in zip(scores.get("class_names", CLASS_NAMES), scores["iou"], strict=True):
        print(f"{name:<16}{'n/a' if math.isnan(value) else f'{100 * value:.2f}':>8}")
    print(f"{'mean IoU':<16}{100 * scores['mean_iou']:>8.2f}")
    print(f"{'pixel accuracy':<16}{100 * scores['pixel_accuracy']:>8.2f}")


def _run_finder(
    args: argparse.Namespace,
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
    dist: DistributeInfo,
    root: str,
) -> None:
    """-f: the learning-rate range test instead of training; print the suggested range."""
    # after parsing: keeps --help and usage errors instant
    from training.lr_finder import run_lr_finder

    result, paths = run_lr_finder(
        config,
        strategy,
        args.lrfinder,
        root,
        steps=args.finder_steps,
        start=args.min_lr if args.min_lr is not None else 1e-6,
        end=args.max_lr if args.max_lr is not None else 1e2,
        worker_index=dist.worker_index,
        log=print if dist.is_chief else None,
    )
    if paths is not None:
        print(
            f"suggested: --min-lr {result.min_lr:.3g} --max-lr {result.max_lr:.3g}"
            f"{' (sweep stopped: the loss diverged)' if result.diverged else ''}"
        )
        print(f"wrote {paths[0]}, {paths[1]} and {paths[2]}")


def _peer_failure_reason(exc: Exception) -> str:
    """The line of a collective's error that says what happened to the peer."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if re.search(r"abort|unavailable|peer|reset|down|timed? ?out|deadline", line, re.I):
            return line[:300]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _show_recipe(args: argparse.Namespace) -> None:
    """Print the settings `-m MODEL` trains with when no option overrides them."""
    from models import get_info
    from models.options import model_options

    info = get_info(args.model)
    recipe, bn = info.recipe, info.batch_norm
    published = info.published_for(model_options(args))
    rows = [
        ("optimizer", recipe.optimizer),
        ("learning rate", f"{recipe.learning_rate:g} per replica's batch (--lr-scaling linear)"),
        ("momentum", f"{recipe.momentum:g}"),
        ("weight decay", f"{recipe.weight_decay:g}"),
        ("schedule", f"{recipe.schedule} (power {recipe.power:g})"),
        ("crop", f"{recipe.crop_size[0]},{recipe.crop_size[1]} (-t)"),
        ("batch", f"{recipe.batch_size} per replica (-b)"),
        ("epochs", f"{recipe.epochs} (-e)"),
        (
            "loss",
            recipe.loss
            + (f"; aux heads {', '.join(info.aux_loss_kinds)}" if info.aux_weights else ""),
        ),
        *(
            [("ohem", f"threshold {recipe.ohem_thresh:g}, at least {recipe.ohem_min_kept} pixels")]
            if recipe.loss == "ohem"
            else []
        ),
        ("aux weights", ", ".join(f"{w:g}" for w in info.aux_weights) or "none"),
        ("batch norm", f"momentum {bn.momentum:g}, epsilon {bn.epsilon:g} ({bn.source})"),
        ("published", published.source),
        *([("note", recipe.note)] if recipe.note else []),
    ]
    print(f"{args.model} recipe (the defaults of train.py -m {args.model}):")
    for key, value in rows:
        print(f"  {key:<14} {value}")


@guard(
    on_interrupt="rerun the same command to continue from the last checkpoint in its "
    "--output-dir (default runs/MODEL); the epoch in progress starts again"
)
def main(argv: list[str] | None = None) -> int:
    """Parse the command line, build the config, then train (or run the learning-rate finder)."""
    args = build_parser().parse_args(argv)
    quiet_tensorflow()  # before the first TensorFlow import (the models' registry)
    if args.deterministic:  # before the first function is traced
        from training.setup import enable_determinism

        enable_determinism()
    if args.show_recipe:
        _show_recipe(args)
        return 0
    # after quiet_tensorflow: the models' registry imports TensorFlow and Keras
    from training.config import TrainConfig

    config = TrainConfig.from_recipe(args)
    root = dataset_root(args)

    # after parsing: keeps --help and usage errors instant
    from training.distribute import make_strategy

    strategy, dist = make_strategy(args.distribute)
    if dist.num_workers > 1 and dist.is_chief:
        print(
            f"multi-worker run: {dist.num_workers} workers from {dist.cluster_source}, "
            f"{dist.num_replicas} replicas"
        )
    if args.lrfinder:
        # after parsing: keeps --help and usage errors instant
        from datasets.pipeline import bad_file_errors

        with bad_file_errors(skip_bad_option=not args.skip_bad):
            _run_finder(args, config, strategy, dist, root)
        return 0

    # after parsing: keeps --help and usage errors instant
    from datasets.pipeline import bad_file_errors
    from training.preemption import PREEMPTED_EXIT_CODE, Preempted, StopRequest
    from training.run import PEER_FAILURES, NonFiniteLossError, run_training

    log = print if dist.is_chief else None
    try:
        # a bad file: one line naming it (the checkpoints written so far stay); SIGTERM or a
        # first Ctrl-C: the state of the current step is saved and the run stops
        # (training.preemption); a second Ctrl-C stops at once (KeyboardInterrupt)
        stop = StopRequest((signal.SIGTERM, signal.SIGINT))
        with bad_file_errors(skip_bad_option=not args.skip_bad), stop:
            result = run_training(config, strategy, dist.worker_index, root, log=log, stop=stop)
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Preempted as exc:
        if exc.signal_name == "SIGINT":  # Ctrl-C: the step's state is saved as for SIGTERM
            if dist.is_chief:
                interrupted(str(exc))
            return 130
        if dist.is_chief:
            print(f"preempted: {exc}", file=sys.stderr, flush=True)
        return PREEMPTED_EXIT_CODE
    except PEER_FAILURES as exc:
        if dist.num_workers < 2:
            raise
        # a peer died: TensorFlow's health check aborts the collectives within about a minute
        reason = _peer_failure_reason(exc)
        print(
            f"error: worker {dist.worker_index} of {dist.num_workers}: another worker of the run "
            f"stopped ({reason}); training stopped; the checkpoints in {config.output_dir} are "
            "intact: start all workers again with the same command to continue",
            file=sys.stderr,
            flush=True,
        )
        return 1
    if dist.is_chief:
        if result.scores is not None:
            _print_scores(result.scores)
        if result.history:
            print(
                f"\nbest weights: {result.best_weights}\nlast weights: {result.last_weights}"
                f"\nper-class IoU: {Path(config.output_dir) / 'val_scores.json'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
