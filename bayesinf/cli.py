"""Command line: ``bayesinf demo`` (the main job), ``bayesinf serve`` (the prediction service) and
``bayesinf --version``; ``bayesinf predict`` scores a file with a saved model (``bayesinf.batch``)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _at_least(minimum: int):
    """argparse type: an int of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}; got {value}")
        return value
    return parse


def _port(text: str) -> int:
    value = _at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in [0, 65535]; got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0; got {text}")
    return value


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="bayesinf", description="Bayesian inference on NumPyro/JAX.")
    parser.add_argument("--version", action="version", version=f"bayesinf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="fit a hierarchical radon model, predict intervals, write plots")
    demo.add_argument("--out", default="bayesinf-demo", help="folder for the plots (default: %(default)s)")
    demo.add_argument("--draws", type=_at_least(1), default=1000, help="kept draws per chain (default: %(default)s)")
    demo.add_argument("--warmup", type=_at_least(0), default=1000, help="warmup iterations per chain (default: %(default)s)")
    demo.add_argument("--chains", type=_at_least(1), default=4, help="number of chains (default: %(default)s)")
    demo.add_argument("--seed", type=_at_least(0), default=0, help="random seed (default: %(default)s)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    serve = commands.add_parser("serve", help="serve the models of a ModelStore over HTTP (FastAPI + uvicorn)")
    serve.add_argument("store", help="root directory of the ModelStore")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default: %(default)s)")
    serve.add_argument("--api-key", default=None,
                       help="require this key on every route but /healthz and /readyz (default: the "
                            "BAYESINF_API_KEY environment variable; none: no key)")
    serve.add_argument("--max-rows", type=_at_least(1), default=1000, help="most rows per request (default: %(default)s)")
    serve.add_argument("--max-return-draws", type=_at_least(0), default=1000,
                       help="most raw draws returned per row (default: %(default)s)")
    serve.add_argument("--max-body-bytes", type=_at_least(1), default=1 << 20,
                       help="largest request body in bytes (default: %(default)s)")
    serve.add_argument("--max-batch", type=_at_least(1), default=32,
                       help="most single-row requests micro-batched into one call (default: %(default)s)")
    serve.add_argument("--max-wait-ms", type=_non_negative_float, default=0.5,
                       help="longest wait of a micro-batch for requests being received (default: %(default)s)")
    serve.add_argument("--threads", type=_at_least(1), default=2, help="threads running predictions (default: %(default)s)")
    serve.add_argument("--all-versions", action="store_true",
                       help="serve every version (default: the latest and aliased versions)")
    serve.add_argument("--cors-origin", action="append", default=[],
                       help="allow CORS from this origin (repeatable; default: CORS off)")
    serve.add_argument("--log-level", default="info", type=str.lower, choices=LOG_LEVELS, help="uvicorn log level (default: %(default)s)")
    serve.add_argument("--monitor-db", default=None, metavar="URL",
                       help="record every prediction to this SQLAlchemy database URL (default: "
                            "sqlite:///<STORE>/monitor.sqlite3; 'off': no monitoring)")
    predict = commands.add_parser("predict", help="score a CSV or Parquet file with a saved model, in chunks")
    predict.add_argument("model", help="a saved model directory (Posterior.save) or STORE/NAME of a ModelStore")
    predict.add_argument("--input", required=True, help="input .csv or .parquet file")
    predict.add_argument("--output", required=True, help="output .csv or .parquet file (written atomically)")
    predict.add_argument("--levels", default="0.5,0.9", help="interval levels, comma-separated (default: %(default)s)")
    predict.add_argument("--kind", default="eti", choices=("eti", "hdi"), help="interval kind (default: %(default)s)")
    predict.add_argument("--chunk-rows", type=_at_least(1), default=262144, help="rows per chunk (default: %(default)s)")
    predict.add_argument("--seed", type=_at_least(0), default=0, help="seed of the predictive draws (default: %(default)s)")
    predict.add_argument("--version", default=None, help="store version or alias (default: the latest)")
    predict.add_argument("--keep", action="append", default=[],
                         help="input column copied to the output (repeatable, or comma-separated)")
    predict.add_argument("--column", action="append", default=[], metavar="ARG=COL[,COL...]",
                         help="input columns of a plain model's row argument (repeatable)")
    predict.add_argument("--new-groups", default="sample", choices=("sample", "population", "error"),
                         help="formula models: unseen group levels (default: %(default)s)")
    predict.add_argument("--ignore-extra", action="store_true", help="skip input columns the model does not read")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    predict.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run
        from .errors import InputError

        try:
            run(args.out, draws=args.draws, warmup=args.warmup, chains=args.chains, seed=args.seed,
                progress=False if args.no_progress else None)
        except (InputError, OSError) as exc:  # OSError: --out cannot be created or written
            print(f"bayesinf demo: {exc}", file=sys.stderr)
            return 2
    elif args.command == "serve":
        return _serve(args)
    elif args.command == "predict":
        return _predict(args)
    return 0


def _serve(args) -> int:
    import os
    from pathlib import Path

    from .serve import API_KEY_ENV, run

    if not Path(args.store).is_dir():
        print(f"bayesinf serve: '{args.store}' is not a directory (a ModelStore root)", file=sys.stderr)
        return 2
    problem = _port_problem(args.host, args.port)
    if problem:  # say so now, not after every model has loaded and compiled
        print(f"bayesinf serve: cannot listen on {args.host}:{args.port} ({problem})", file=sys.stderr)
        return 2
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    try:
        monitor = _monitor(args.monitor_db, args.store)
    except Exception as exc:  # a URL the recorder refuses: say which, do not serve unmonitored
        print(f"bayesinf serve: --monitor-db: {exc}", file=sys.stderr)
        return 2
    run(args.store, host=args.host, port=args.port, api_key=api_key, log_level=args.log_level,
        max_rows=args.max_rows, max_return_draws=args.max_return_draws, max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, threads=args.threads,
        all_versions=args.all_versions, cors_origins=tuple(args.cors_origin), monitor=monitor)
    return 0


def _port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (in use, unknown host), or None."""
    import socket

    try:
        with socket.create_server((host, port), reuse_port=False):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _monitor(url: str | None, store: str):
    """The prediction recorder of ``bayesinf serve``: None for ``off``, else ``bayesinf.monitor.Recorder``."""
    from pathlib import Path

    if url is not None and url.strip().lower() == "off":
        return None
    default = url is None
    if default:
        url = f"sqlite:///{(Path(store).resolve() / 'monitor.sqlite3').as_posix()}"
    try:
        from .monitor import Recorder
    except ModuleNotFoundError as exc:
        if not default or exc.name != f"{__package__}.monitor":
            raise
        print("bayesinf serve: monitoring off (bayesinf.monitor is not installed)", file=sys.stderr)
        return None
    return Recorder(url, store=store)  # the store's training statistics are the drift reference


def _predict(args) -> int:
    """``bayesinf predict``: load the model (a directory or STORE/NAME) and run ``bayesinf.batch.predict``."""
    from pathlib import Path

    from .errors import BayesinfError

    try:
        if (Path(args.model) / "manifest.json").is_file():
            if args.version is not None:
                raise BayesinfError(f"--version is for STORE/NAME models; '{args.model}' is a model directory")
            from .persistence import load

            post = load(args.model)
        else:
            from .store import ModelStore

            store, _, name = args.model.rstrip("/").rpartition("/")
            if not store or not Path(store).is_dir():
                raise BayesinfError(f"'{args.model}' is neither a saved model directory nor STORE/NAME of a ModelStore")
            if Path(args.model).is_dir() and not ModelStore(store).versions(name):
                from .persistence import load

                load(args.model)  # not a store entry: its ModelFileError says what the directory lacks
            version = int(args.version) if args.version is not None and args.version.isdigit() else args.version
            post = ModelStore(store).load(name, version)
        from .batch import predict

        try:
            levels = tuple(float(v) for v in args.levels.split(",") if v.strip())
        except ValueError:
            raise BayesinfError(f"--levels must be comma-separated numbers; got {args.levels!r}") from None
        columns = {}
        for item in args.column:
            arg, sep, cols = item.partition("=")
            if not sep or not arg or not cols:
                raise BayesinfError(f"--column must be ARG=COL[,COL...]; got {item!r}")
            columns[arg] = [c for c in cols.split(",") if c]
        keep = [c for item in args.keep for c in item.split(",") if c]
        result = predict(post, args.input, args.output, chunk_rows=args.chunk_rows, levels=levels, kind=args.kind,
                         seed=args.seed, columns=columns or None, keep=keep,
                         extra="ignore" if args.ignore_extra else "error", new_groups=args.new_groups,
                         overwrite=args.overwrite, progress=not args.no_progress)
    except (BayesinfError, OSError) as exc:
        print(f"bayesinf predict: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bayesinf predict: interrupted; the finished chunks are kept: run the same command again to resume",
              file=sys.stderr)
        return 130
    print(f"wrote {result.num_rows} rows to {result.path} ({result.num_chunks} chunks, {result.reused_chunks} "
          f"reused from an interrupted run) in {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
