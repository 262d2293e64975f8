"""The command-line applications: ``python -m pyro_kl demo`` and ``python -m pyro_kl gallery``.

Both check their output folder before any work and write into a staging
folder that replaces ``--out`` only when everything is written (see
:mod:`pyro_kl.cli.output`). Bad arguments end with a one-line message and
exit status 2.
"""

import argparse
import math
import os
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from typing import List, Optional, Sequence

from .. import __version__
from .output import OutputFolderError, staged_output_folder

PROG = "python -m pyro_kl"
PICTURE_FORMATS = ("svg", "png", "pdf", "gv")
DEMO_FILES = {"worlds.gv", "reconstructions.png", "rate_distortion.png", "summary.json"} | {
    f"worlds.{fmt}" for fmt in PICTURE_FORMATS
}


def _betas(text: str) -> List[float]:
    try:
        betas = [float(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers, e.g. 0.5,1,2"
        ) from None
    if any(not (math.isfinite(b) and b >= 0) for b in betas):
        raise argparse.ArgumentTypeError(f"{text!r}: each beta must be finite and >= 0")
    return betas


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


SEED_LIMIT = 2**32
"""Seeds are those NumPy and Pyro accept: whole numbers in ``[0, 2**32)``."""


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number from 0 to {SEED_LIMIT - 1} (the seeds NumPy "
            "and Pyro accept)"
        )
    return value


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0")
    return value


def _parser() -> argparse.ArgumentParser:
    from .demo import (
        DEFAULT_STEPS,
        DEFAULT_SWEEP_BETAS,
        DEFAULT_SWEEP_STEPS,
    )

    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="KL(real world || dream world) objectives for Pyro: the demo and the gallery.",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"pyro_kl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="train a beta-VAE on scikit-learn's digits, sweep beta, draw both worlds",
        description="Train the VAE recipe (Binomial(16) pixels) on scikit-learn's handwritten "
        "digits with RateDistortionELBO (D + beta*R), walk a beta sweep along the "
        "rate-distortion frontier, and write the pictures and summary.json into --out.",
        formatter_class=formatter,
    )
    demo.add_argument("--out", default="pyro_kl_demo", help="output folder (replaced as a "
                      "whole when the run completes; it may hold only an earlier run's files)")
    demo.add_argument("--steps", type=_positive, default=DEFAULT_STEPS,
                      help="optimizer steps of the main model (batches of 256 digits)")
    demo.add_argument("--beta", type=_weight, default=1.0, help="weight of the rate R")
    demo.add_argument("--sweep-betas", type=_betas,
                      default=",".join(f"{b:g}" for b in DEFAULT_SWEEP_BETAS),
                      help="comma-separated betas of the rate-distortion sweep")
    demo.add_argument("--sweep-steps", type=_positive, default=DEFAULT_SWEEP_STEPS,
                      help="optimizer steps per further beta of the sweep (warm-started)")
    demo.add_argument("--no-sweep", action="store_true",
                      help="skip the sweep and its rate-distortion picture")
    demo.add_argument("--seed", type=_seed, default=0, help="random seed")
    demo.add_argument("--format", default="svg", choices=PICTURE_FORMATS,
                      help="format of the worlds picture; worlds.gv (the DOT source) is "
                      "always written, the picture only when graphviz's dot is installed")
    demo.add_argument("--threads", type=_positive, default=1,
                      help="torch threads; the networks are small, so one thread is fastest")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    gallery = commands.add_parser(
        "gallery",
        help="render both worlds of every recipe of the essay",
        description="Render the real world P (data + guide) beside the dream world Q (model) "
        "of every recipe, one file each, with the objective they derive.",
        formatter_class=formatter,
    )
    gallery.add_argument("--out", default="pyro_kl_gallery", help="output folder (replaced "
                         "as a whole; it may hold only an earlier gallery's files)")
    gallery.add_argument("--format", default="svg", choices=PICTURE_FORMATS,
                         help="picture format; gv writes the DOT source and needs no "
                         "graphviz dot program")
    return parser


def _fail(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    raise SystemExit(2)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Runs ``python -m pyro_kl`` with ``argv`` (default: the command line).

    :raises SystemExit: with status 2 and a one-line message when an argument or
        the output folder cannot be used.
    """
    args = _parser().parse_args(argv)
    try:
        with _terminate_as_interrupt():
            if args.command == "demo":
                _demo(args)
            else:
                _gallery(args)
    except OutputFolderError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted; {args.out!r} is left as it was.\n")
        raise SystemExit(130) from None


@contextmanager
def _terminate_as_interrupt():
    """Lets ``kill`` (SIGTERM) clean up like Ctrl-C does, in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _demo(args: argparse.Namespace) -> None:
    import torch

    from .demo import run_demo

    torch.set_num_threads(args.threads)
    betas = [] if args.no_sweep else args.sweep_betas
    with staged_output_folder(args.out, owns=DEMO_FILES.__contains__) as staging:
        run_demo(
            staging,
            steps=args.steps,
            beta=args.beta,
            sweep_betas=betas,
            sweep_steps=args.sweep_steps,
            seed=args.seed,
            picture_format=args.format,
            progress=not args.no_progress,
            command=" ".join([PROG, *_rerun_arguments(args)]),
        )
    print(f"Wrote {os.path.abspath(args.out)}{os.sep}")


def _rerun_arguments(args: argparse.Namespace) -> List[str]:
    """The demo's options as a command line that reruns it."""
    shown = ["demo", "--out", args.out, "--steps", str(args.steps), "--beta", f"{args.beta:g}",
             "--seed", str(args.seed), "--format", args.format]
    if args.no_sweep:
        shown.append("--no-sweep")
    else:
        shown += ["--sweep-betas", ",".join(f"{b:g}" for b in args.sweep_betas),
                  "--sweep-steps", str(args.sweep_steps)]
    return shown


def _gallery(args: argparse.Namespace) -> None:
    from ..gallery import render_gallery
    from ..recipes import RECIPES

    if args.format != "gv" and shutil.which("dot") is None:
        _fail(f"--format {args.format} needs graphviz's `dot` program, which is not on PATH; "
              "install graphviz, or use --format gv for the DOT sources.")
    owned = {f"{name}.{fmt}" for name in RECIPES for fmt in PICTURE_FORMATS}
    with staged_output_folder(args.out, owns=owned.__contains__) as staging:
        names = [os.path.basename(p) for p in render_gallery(staging, format=args.format)]
    for name in names:
        print(os.path.join(args.out, name))
