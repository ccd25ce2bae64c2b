"""The `secondary-dns` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from secondary_dns import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secondary-dns",
        description="Managed secondary authoritative DNS on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"secondary-dns {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
