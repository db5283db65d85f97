"""Files a user hands us: declared sizes bounded before anything is inflated, failures named.

Every loader of the package reads through these helpers (``docs/robustness.md``, "Bounds"):

- a file larger than the cap of its kind (:data:`MAX_TEXT_BYTES` for JSON / YAML,
  :data:`MAX_MODEL_BYTES` for an ONNX network, :data:`MAX_BOOSTER_BYTES` for an XGBoost booster)
  is refused before it is read;
- JSON nested deeper than :data:`MAX_DEPTH` is refused before it is parsed (Python's parser
  recurses; 100 000 brackets end in ``RecursionError``);
- an ``.npz`` is judged by its ``.npy`` headers alone (shape and dtype of every array, the number
  of members) before a byte is decompressed: more than the caller's bound is refused, where
  ``np.load`` would first allocate what the header declares (a 3 KB file can ask for 298 GiB);
- :func:`naming` turns *any* exception of a loader into one :class:`FileProblem` line naming the
  file, so an unexpected ``AttributeError`` or ``MemoryError`` still says which file and why.
"""
from __future__ import annotations

from contextlib import contextmanager
import json
from math import prod
from pathlib import Path
import re
from typing import Any, Iterator
import zipfile

import numpy as np

__all__ = ['FileProblem', 'MAX_TEXT_BYTES', 'MAX_DEPTH', 'MAX_ARRAY_BYTES', 'MAX_MODEL_BYTES',
           'MAX_BOOSTER_BYTES', 'full_path', 'check_file_size', 'nesting_depth', 'check_depth',
           'parse_json',
           'read_text', 'read_json', 'npz_headers', 'check_npz', 'load_npz', 'naming',
           'one_line']

MIB = 1 << 20
MAX_TEXT_BYTES = 16 * MIB  # a manifest, a model spec, a parameter file, priors metadata
MAX_DEPTH = 64  # JSON arrays / objects inside each other (the package's files use 5)
MAX_ARRAY_BYTES = 1024 * MIB  # all arrays of one .npz together (priors, cached frames)
MAX_MEMBERS = 64  # arrays in one .npz (priors have 3)
MAX_MODEL_BYTES = 1024 * MIB  # an ONNX network (the shipped ones have 1.5 - 4.4 MB)
MAX_BOOSTER_BYTES = 64 * MIB  # one XGBoost booster of a meta bundle (the shipped: < 40 KB)
# A JSON string (its brackets do not nest); an unterminated one matches nothing.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class FileProblem(ValueError):
    """A file that cannot be used; the message is one line naming it (full path) and why."""


def one_line(text: str) -> str:
    """Return ``text`` with its lines joined by spaces (a log line, an error line)."""
    return ' '.join(line.strip() for line in str(text).splitlines() if line.strip())


def _mib(size: int) -> str:
    """Return a byte count in MiB for messages."""
    return f'{size / MIB:g} MiB'


def full_path(path: str | Path) -> Path:
    """Return ``path`` absolute with ``~`` expanded (how errors name a file)."""
    return Path(path).expanduser().absolute()


def check_file_size(path: str | Path, limit: int, what: str) -> int:
    """Return the size of file ``path``; raise :class:`FileProblem` when above ``limit``."""
    size = Path(path).stat().st_size
    if size > limit:
        raise FileProblem(f'{what} {path}: {size} bytes, more than the {_mib(limit)} allowed')
    return size


def nesting_depth(text: str | bytes) -> int:
    """Return how deep JSON arrays and objects nest in ``text`` (brackets in strings ignored)."""
    data = text.encode('utf-8', 'replace') if isinstance(text, str) else bytes(text)
    codes = np.frombuffer(_JSON_STRING.sub(b'""', data), dtype=np.uint8)
    steps = np.isin(codes, (ord('['), ord('{'))).astype(np.int32) - \
        np.isin(codes, (ord(']'), ord('}')))
    return int(np.cumsum(steps).max(initial=0))


def check_depth(text: str, what: str) -> None:
    """Raise :class:`FileProblem` when ``text`` nests deeper than :data:`MAX_DEPTH`."""
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise FileProblem(f'{what}: nested {depth} levels deep, more than the {MAX_DEPTH} '
                          f'allowed')


def parse_json(text: str, what: str) -> Any:
    """Parse JSON ``text`` after bounding its nesting; ``what`` names the file in errors."""
    check_depth(text, what)
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and numbers too long to convert
        raise FileProblem(f'{what}: not valid JSON ({exc})') from exc


def read_text(path: str | Path, what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """Return the UTF-8 text of ``path`` (at most ``limit`` bytes); ``what`` names its kind."""
    check_file_size(path, limit, what)
    try:
        return Path(path).read_text(encoding='utf-8')
    except UnicodeDecodeError as exc:
        raise FileProblem(f'{what} {path}: not UTF-8 text ({exc})') from exc


def read_json(path: str | Path, what: str) -> Any:
    """Return the parsed JSON file ``path``, size and nesting bounded first."""
    return parse_json(read_text(path, what), f'{what} {path}')


def _member_count(path: Path, what: str) -> None:
    """Refuse a zip whose central directory lists more than :data:`MAX_MEMBERS` entries.

    Read from the end-of-central-directory record: ``zipfile.ZipFile`` builds an object per
    entry before anything else, about 0.5 KB each (a 50 MB archive of empty entries: 5 GB).
    """
    with open(path, 'rb') as fh:
        record = zipfile._EndRecData(fh)  # the record zipfile itself reads first; zip64 too
    count = record[zipfile._ECD_ENTRIES_TOTAL] if record else 0
    if count > MAX_MEMBERS:
        raise FileProblem(f'{what}: {count} members, more than the {MAX_MEMBERS} allowed')


def npz_headers(path: str | Path, what: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Return each array's declared shape and dtype, from the ``.npy`` headers alone."""
    path = Path(path)
    if not zipfile.is_zipfile(path):  # np.load would take other bytes for a pickle
        raise FileProblem(f'{what}: not a .npz archive (empty, truncated or another format)')
    _member_count(path, what)
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(member)
                headers[info.filename.removesuffix('.npy')] = (tuple(shape), np.dtype(dtype))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FileProblem(f'{what}: not a readable .npz ({one_line(str(exc))})') from exc
    return headers


def check_npz(path: str | Path, what: str, limit: int = MAX_ARRAY_BYTES,
              member_limits: dict[str, int] | None = None) -> None:
    """Raise :class:`FileProblem` unless the arrays of ``path`` declare at most ``limit`` bytes.

    ``member_limits`` bounds single arrays by name. Only the headers are read.
    """
    headers = npz_headers(path, what)
    sizes = {name: prod(shape) * dtype.itemsize for name, (shape, dtype) in headers.items()}
    for name, size in sizes.items():
        bound = (member_limits or {}).get(name, limit)
        if size > bound:
            shape, dtype = headers[name]
            raise FileProblem(f'{what}: array {name!r} declares shape {shape} of {dtype} '
                              f'({size} bytes), more than the {_mib(bound)} allowed')
    if sum(sizes.values()) > limit:
        raise FileProblem(f'{what}: its arrays declare {sum(sizes.values())} bytes, more than '
                          f'the {_mib(limit)} allowed')


def load_npz(path: str | Path, what: str, limit: int = MAX_ARRAY_BYTES,
             member_limits: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Return every array of the ``.npz`` ``path`` once :func:`check_npz` let it through.

    Nothing is unpickled (``allow_pickle=False``).
    """
    check_npz(path, what, limit, member_limits)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FileProblem(f'{what}: not a readable .npz ({one_line(str(exc))})') from exc


@contextmanager
def naming(what: str, path: str | Path) -> Iterator[None]:
    """Turn any exception of the block into one :class:`FileProblem` line naming ``path``.

    A ``ValueError`` / ``OSError`` that names the file already passes unchanged (callers may
    tell its kind apart); anything else (an ``AttributeError`` of a well-formed file of the
    wrong shape, ``RecursionError``, ``MemoryError``) becomes ``<what> <path>: <type>: <text>``.
    """
    try:
        yield
    except Exception as exc:  # noqa: B902 - the loader boundary: every failure names the file
        text = one_line(str(exc))
        if isinstance(exc, (ValueError, OSError)) and str(path) in text:
            raise
        if not isinstance(exc, (ValueError, OSError)):
            text = f'{type(exc).__name__}: {text}' if text else type(exc).__name__
        raise FileProblem(f'{what} {path}: {text}') from exc
