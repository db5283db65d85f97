"""The ``metafusion`` command line: one subcommand per offline tool.

Each subcommand lives in ``metafusion_ros.tools.commands.<module>`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed args,
returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order --help lists them.
COMMAND_MODULES: tuple[str, ...] = ('synth', 'priors', 'stats', 'digits', 'fit', 'evaluate',
                                    'operating_point', 'bag', 'train', 'espnet', 'miou',
                                    'quantize')


class CommandError(Exception):
    """A user-facing error: printed as one line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog='metafusion',
        description='MetaFusion offline tools: data, priors, models, meta classifier, '
                    'evaluation and rosbags.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f'metafusion_ros.tools.commands.{name}').register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``metafusion`` command line and return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CommandError, ValueError, FileNotFoundError, OSError) as exc:
        print(f'metafusion {args.command}: error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':  # run the package's module, whose CommandError the commands raise
    from metafusion_ros.tools.cli import main as package_main
    sys.exit(package_main())
