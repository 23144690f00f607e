"""Command line: ``bayesinf demo`` (the main job), ``bayesinf serve`` (the prediction service) and
``bayesinf --version``."""

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
    serve = commands.add_parser("serve", help="serve the models of a ModelStore over HTTP (FastAPI + uvicorn)")
    serve.add_argument("store", help="root directory of the ModelStore")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    serve.add_argument("--api-key", default=None,
                       help="require this key on every route but /healthz and /readyz (default: the "
                            "BAYESINF_API_KEY environment variable; none: no key)")
    serve.add_argument("--max-rows", type=int, default=1000, help="most rows per request (default: %(default)s)")
    serve.add_argument("--max-return-draws", type=int, default=1000,
                       help="most raw draws returned per row (default: %(default)s)")
    serve.add_argument("--max-body-bytes", type=int, default=1 << 20,
                       help="largest request body in bytes (default: %(default)s)")
    serve.add_argument("--max-batch", type=int, default=32,
                       help="most single-row requests micro-batched into one call (default: %(default)s)")
    serve.add_argument("--max-wait-ms", type=float, default=2.0,
                       help="longest wait of a micro-batch for requests being received (default: %(default)s)")
    serve.add_argument("--threads", type=int, default=2, help="threads running predictions (default: %(default)s)")
    serve.add_argument("--all-versions", action="store_true",
                       help="serve every version (default: the latest and aliased versions)")
    serve.add_argument("--cors-origin", action="append", default=[],
                       help="allow CORS from this origin (repeatable; default: CORS off)")
    serve.add_argument("--log-level", default="info", help="uvicorn log level (default: %(default)s)")
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
    elif args.command == "serve":
        return _serve(args)
    return 0


def _serve(args) -> int:
    import os
    from pathlib import Path

    from .serve import API_KEY_ENV, run

    if not Path(args.store).is_dir():
        print(f"bayesinf serve: '{args.store}' is not a directory (a ModelStore root)", file=sys.stderr)
        return 2
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    run(args.store, host=args.host, port=args.port, api_key=api_key, log_level=args.log_level,
        max_rows=args.max_rows, max_return_draws=args.max_return_draws, max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, threads=args.threads,
        all_versions=args.all_versions, cors_origins=tuple(args.cors_origin))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
