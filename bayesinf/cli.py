"""Command line: ``bayesinf demo`` (the main job) and ``bayesinf --version``."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="bayesinf", description="Bayesian inference on NumPyro/JAX.")
    parser.add_argument("--version", action="version", version=f"bayesinf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="fit a hierarchical radon model, predict intervals, write plots")
    demo.add_argument("--out", default="bayesinf-demo", help="folder for the plots (default: %(default)s)")
    demo.add_argument("--draws", type=int, default=1000, help="kept draws per chain (default: %(default)s)")
    demo.add_argument("--warmup", type=int, default=1000, help="warmup iterations per chain (default: %(default)s)")
    demo.add_argument("--chains", type=int, default=4, help="number of chains (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run
        from .errors import InputError

        try:
            run(args.out, draws=args.draws, warmup=args.warmup, chains=args.chains, seed=args.seed,
                progress=False if args.no_progress else None)
        except InputError as exc:
            print(f"bayesinf demo: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
