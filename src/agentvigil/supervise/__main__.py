"""``python -m agentvigil.supervise supervise|report ...``: the same commands as ``agentvigil supervise`` and
``agentvigil report``, without loading the other CLI commands."""

from __future__ import annotations

import argparse
import sys

from .command import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentvigil.supervise")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
