"""The ``tinyseg`` command: train, evaluate, predict, check-data, gradcheck, bench.

Bad arguments and bad data end with a one-line message on stderr and exit status 2,
never a traceback.
"""
from __future__ import annotations

import argparse
import sys


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line, exit status 2."""


def _gradcheck(args) -> int:
    from .gradcheck_table import run
    return 0 if run() else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyseg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("gradcheck", help="check every op's backward against finite differences")
    p.set_defaults(handler=_gradcheck)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (UsageError, FileNotFoundError, ValueError, TypeError) as exc:
        print(f"tinyseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinyseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
