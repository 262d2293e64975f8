"""Command line: ``python -m pyro_kl demo`` and ``python -m pyro_kl gallery``."""

import argparse
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pyro_kl",
        description="KL(real world || dream world) objectives for Pyro.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="train a beta-VAE on scikit-learn's digits and draw its two worlds"
    )
    demo.add_argument("--out", default="pyro_kl_demo", help="output folder")
    demo.add_argument("--steps", type=int, default=None, help="SVI steps (default: a full run)")
    demo.add_argument("--beta", type=float, default=1.0, help="weight of the rate")

    gallery = commands.add_parser(
        "gallery", help="render both worlds of every recipe of the essay"
    )
    gallery.add_argument("--out", required=True, help="output folder")
    gallery.add_argument("--format", default="svg", choices=["svg", "png", "pdf", "gv"])

    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        run_demo(out=args.out, steps=args.steps, beta=args.beta)
    else:
        from .gallery import render_gallery

        for path in render_gallery(args.out, format=args.format):
            print(path)


if __name__ == "__main__":
    main()
