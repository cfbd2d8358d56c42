"""The `cutover` command. Each subcommand imports its component lazily, so `cutover crds`
needs neither kopf nor the serving stack."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _crds(args: argparse.Namespace) -> int:
    from cutover.api import crd

    if args.stdout:
        sys.stdout.write("---\n".join(crd.render(kind) for kind in crd.KINDS))
        return 0
    for path in crd.write(Path(args.output)):
        print(f"wrote {path}")
    return 0


def _operator(args: argparse.Namespace) -> int:
    import logging

    from cutover.operator.main import run

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    run(namespaces=args.namespace, verdicts_from=args.verdicts_from, metrics_port=args.metrics_port or None)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="cutover", description="Ship ML models to production safely.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    crds = sub.add_parser("crds", help="write the CustomResourceDefinitions generated from the API models")
    crds.add_argument("-o", "--output", default="crds", help="directory to write into (default: crds)")
    crds.add_argument("--stdout", action="store_true", help="print a multi-document YAML stream instead")
    crds.set_defaults(run=_crds)

    op = sub.add_parser("operator", help="run the operator (standalone; one replica per cluster)")
    op.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    op.add_argument("--metrics-port", type=int, default=8000, help="Prometheus metrics port (0 turns it off)")
    op.add_argument(
        "--verdicts-from",
        type=Path,
        metavar="DIR",
        help="development: read analysis verdicts from DIR/<namespace>_<name>.json instead of Prometheus",
    )
    op.add_argument("-v", "--verbose", action="store_true")
    op.set_defaults(run=_operator)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
