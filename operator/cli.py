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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="cutover", description="Ship ML models to production safely.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    crds = sub.add_parser("crds", help="write the CustomResourceDefinitions generated from the API models")
    crds.add_argument("-o", "--output", default="crds", help="directory to write into (default: crds)")
    crds.add_argument("--stdout", action="store_true", help="print a multi-document YAML stream instead")
    crds.set_defaults(run=_crds)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
