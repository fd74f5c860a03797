"""`thermvision-db`: info, verify, preview, demo, generate, export, evaluate from a shell."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thermvision-db", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from generator.cli import add_generate_parser

    add_generate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "generate":
        from generator.cli import run_generate

        return run_generate(args)
    raise SystemExit(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
