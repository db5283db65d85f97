"""The ``metafusion`` command line: one subcommand per offline tool.

Each subcommand lives in ``metafusion_ros.tools.commands.<module>`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed args,
returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path
import sys

# Subcommand modules, in the order --help lists them.
COMMAND_MODULES: tuple[str, ...] = ('synth', 'priors', 'stats', 'digits', 'fit', 'evaluate',
                                    'operating_point', 'bag', 'train', 'espnet', 'miou',
                                    'models', 'quantize')


class CommandError(Exception):
    """A user-facing error: printed as one line, exit code 2, no traceback."""


def add_force(parser: argparse.ArgumentParser) -> None:
    """Add ``--force``, the one switch that lets a command write over its existing outputs."""
    parser.add_argument('--force', action='store_true',
                        help='write over outputs that exist already (refused without it)')


def _check_output(path: Path, force: bool, what: str, folder: bool) -> None:
    """Apply the output rule to ``path`` (see :func:`output_path`); create nothing."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise CommandError(f'{what} {path}: {parent} is a file, not a folder')
            break
    if path.exists() and path.is_dir() != folder:
        raise CommandError(f'{what} {path} is a {"file" if folder else "folder"}, not a '
                           f'{"folder" if folder else "file"}')
    if path.exists() and not force:
        raise CommandError(f'{what} {path} already exists; pass --force to write over it')


def output_path(path: str | Path, force: bool, what: str = 'output',
                folder: bool = False) -> Path:
    """Return ``path`` ready to be written: the rule of every command's outputs.

    A folder above it that is a file is named as such; an existing ``path`` is refused unless
    ``force``, and so is a folder where a file belongs (``folder``: the output is a folder);
    missing folders above it are created.
    """
    path = Path(path)
    _check_output(path, force, what, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def output_folder(path: str | Path, force: bool, files: list[str] | None = None) -> Path:
    """Check the output folder ``path`` by the rule of :func:`output_path` (nothing created).

    ``files``: the names the command writes into it, each refused if it exists; without, the
    folder itself must be absent or empty unless ``force``.
    """
    folder = Path(path)
    empty = not folder.is_dir() or not any(folder.iterdir())
    _check_output(folder, force or empty or files is not None, 'output folder', True)
    for name in files or ():
        _check_output(folder / name, force, 'output', False)
    return folder


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
