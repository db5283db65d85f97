"""Chains: a network, its category priors and its per-α meta bundle under one name.

A shipped chain is described by one manifest, ``models/<name>.chain.json`` (format
``metafusion-chain/1``), beside its member files:

- ``name``, ``kind`` (``street``: a network for real cameras; ``toy``: tests and demos only),
  ``summary`` (one line: architecture, classes, input size), ``input`` (the network's
  ``[width, height]``) and ``trained_on`` (network, priors, meta bundle: what each was fitted on);
- ``members``: ``{role, file, sha256}`` for the network (``network``, its spec
  ``network_spec``), the optional INT8 network ``<stem>.int8.onnx`` (``network_int8``, and its
  spec when it has one), the priors (``priors``), the meta bundle's manifest (``meta``) and every
  booster it lists (``meta_member``); file names only, beside the manifest;
- ``measured``: the chain's accuracy and speed, each block with the results file in
  ``docs/results`` it was read from (``source``) and the command that writes that file
  (``command``): ``network`` (``metafusion miou``: mIoU, human IoU, ms per frame) and
  ``metafusion`` (``metafusion evaluate``: Bayes, ML and MetaFusion at α = 1, τ = 0.5).

``metafusion models refresh`` rewrites a manifest from its member files and results
(``tools/commands/models.py``). :func:`resolve` turns what a user gives (a chain name, an ONNX
path or nothing) into the three files the engine loads; :meth:`Chain.verify` refuses a chain
whose members no longer match their digests. No ROS here: the launch arguments, the node and the
CLI use the same rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import hashlib
import json
from pathlib import Path
import re
from typing import Any

__all__ = ['Chain', 'ChainError', 'Member', 'Resolved', 'DEFAULT_CHAIN', 'FORMAT', 'SUFFIX',
           'KINDS', 'NO_META', 'package_folder', 'chain_names', 'load_chain', 'chain_of_model',
           'is_chain_name', 'manifest_name', 'resolve', 'sha256_of', 'accuracy_text',
           'startup_report']

# The chain a user gets without naming one (launch file, node, `make demo`): the one place.
DEFAULT_CHAIN = 'cityscapes_espnetv2_s2_512x256'
FORMAT = 'metafusion-chain/1'
SUFFIX = '.chain.json'
KINDS = ('street', 'toy')
NO_META = 'none'  # meta_model_path value: no meta classifier (keep every candidate)
NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_-]*')
REQUIRED_ROLES = ('network', 'network_spec', 'priors')


class ChainError(ValueError):
    """A chain that is unknown, malformed or whose members do not match its manifest."""


def sha256_of(path: str | Path) -> str:
    """Return the hex SHA-256 of a file."""
    with open(path, 'rb') as handle:
        return hashlib.file_digest(handle, 'sha256').hexdigest()


def package_folder(*parts: str) -> Path:
    """Return a folder of the package: the source tree's, else the installed share's."""
    source = Path(__file__).resolve().parents[2]
    if (source / 'package.xml').is_file():
        return source.joinpath(*parts)
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory('metafusion_ros')).joinpath(*parts)
    except (ImportError, LookupError, ValueError):
        return source.joinpath(*parts)


def _models(models: str | Path | None) -> Path:
    """Return the folder of shipped chains: ``models``, else the package's ``models/``."""
    return Path(models) if models is not None else package_folder('models')


@dataclass(frozen=True)
class Member:
    """One file of a chain: its role, its name beside the manifest and its SHA-256."""

    role: str
    file: str
    sha256: str


@dataclass(frozen=True)
class Chain:
    """A loaded chain manifest (see the module docstring); :meth:`verify` checks the files."""

    name: str
    path: Path
    kind: str
    summary: str
    members: tuple[Member, ...]
    input: tuple[int, int] | None = None
    trained_on: dict[str, str] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        """Return the folder of the manifest and its members."""
        return self.path.parent

    def file(self, role: str) -> Path | None:
        """Return the file of the (first) member with ``role``, or None."""
        for member in self.members:
            if member.role == role:
                return self.folder / member.file
        return None

    @property
    def network(self) -> Path:
        """Return the fp32 ONNX network."""
        return self.file('network')

    @property
    def priors(self) -> Path:
        """Return the category priors."""
        return self.file('priors')

    @property
    def meta(self) -> Path | None:
        """Return the meta bundle's manifest (None: the chain has no classifier)."""
        return self.file('meta')

    @property
    def network_int8(self) -> Path | None:
        """Return the INT8 network, if the chain has one."""
        return self.file('network_int8')

    @property
    def is_default(self) -> bool:
        """Return whether this is the chain a user gets without naming one."""
        return self.name == DEFAULT_CHAIN

    def _where(self) -> str:
        """Return how errors name this chain."""
        return f'chain {self.name} ({self.path})'

    def verify(self) -> None:
        """Raise :class:`ChainError` (one line) for a member missing or changed since written."""
        for member in self.members:
            path = self.folder / member.file
            if not path.is_file():
                raise ChainError(f'{self._where()}: member {member.role} file {path} does not '
                                 f'exist')
            if sha256_of(path) != member.sha256:
                raise ChainError(
                    f'{self._where()}: member {member.role} file {path} does not match the '
                    f'SHA-256 in the manifest (changed since it was written: restore it, or '
                    f'rewrite the manifest with metafusion models refresh {self.name})')

    @classmethod
    def load(cls, path: str | Path) -> 'Chain':
        """Read a chain manifest; raise :class:`ChainError` naming it when it is malformed."""
        path = Path(path)
        where = f'chain manifest {path}'
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ChainError(f'{where}: not readable JSON ({exc})') from exc
        if not isinstance(data, dict) or data.get('format') != FORMAT:
            found = data.get('format') if isinstance(data, dict) else None
            raise ChainError(f'{where}: unknown format {found!r}, expected {FORMAT!r}')
        try:
            members = tuple(Member(str(m['role']), str(m['file']), str(m['sha256']))
                            for m in data['members'])
            size = data.get('input')
            chain = cls(str(data['name']), path, str(data['kind']), str(data.get('summary', '')),
                        members, None if size is None else (int(size[0]), int(size[1])),
                        dict(data.get('trained_on') or {}), dict(data.get('measured') or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ChainError(f'{where}: malformed ({type(exc).__name__}: {exc})') from exc
        _check(chain, where)
        return chain


def _check(chain: Chain, where: str) -> None:
    """Raise :class:`ChainError` for a bad name, kind, member file name or missing role."""
    if manifest_name(chain.path) != chain.name or NAME.fullmatch(chain.name) is None:
        raise ChainError(f'{where}: name {chain.name!r} must be the file name before '
                         f'{SUFFIX} (letters, digits, _ and -)')
    if chain.kind not in KINDS:
        raise ChainError(f'{where}: kind {chain.kind!r} is not one of {", ".join(KINDS)}')
    for member in chain.members:
        if not member.file or Path(member.file).name != member.file:
            raise ChainError(f'{where}: member file {member.file!r} is not a file name beside '
                             f'the manifest')
    missing = [role for role in REQUIRED_ROLES if chain.file(role) is None]
    if missing:
        raise ChainError(f'{where}: no {", ".join(missing)} member')


def manifest_name(path: Path) -> str:
    """Return the chain name of a manifest path (``x.chain.json`` -> ``x``)."""
    return path.name[:-len(SUFFIX)] if path.name.endswith(SUFFIX) else path.stem


def chain_names(models: str | Path | None = None) -> list[str]:
    """Return the names of the chains in ``models`` (default: the package's), sorted."""
    return sorted(manifest_name(p) for p in _models(models).glob(f'*{SUFFIX}'))


def _names_text(models: Path) -> str:
    """Return the chain names of ``models`` for an error message, the default marked."""
    names = [f'{n} (default)' if n == DEFAULT_CHAIN else n for n in chain_names(models)]
    return ', '.join(names) if names else 'none'


def load_chain(name: str, models: str | Path | None = None) -> Chain:
    """Return the chain ``name`` of ``models``; an unknown name lists the shipped ones."""
    folder = _models(models)
    path = folder / f'{name}{SUFFIX}'
    if NAME.fullmatch(name) is None or not path.is_file():
        raise ChainError(f'unknown chain {name!r}: the chains in {folder} are '
                         f'{_names_text(folder)} (or give the path of an ONNX file)')
    return Chain.load(path)


def chain_of_model(model: str | Path, models: str | Path | None = None) -> Chain | None:
    """Return the chain whose manifest lists the ONNX file ``model``, or None.

    First the manifests beside ``model`` that name it (its fp32 or INT8 network), then the
    package's chains whose network has the file's SHA-256 (a copy of a shipped network).
    """
    model = Path(model)
    for path in sorted(model.parent.glob(f'*{SUFFIX}')):
        chain = Chain.load(path)
        if any(member.role in ('network', 'network_int8') and member.file == model.name
               for member in chain.members):
            return chain
    digest = sha256_of(model)
    for path in sorted(_models(models).glob(f'*{SUFFIX}')):
        chain = Chain.load(path)
        if any(member.role in ('network', 'network_int8') and member.sha256 == digest
               for member in chain.members):
            return chain
    return None


@dataclass(frozen=True)
class Resolved:
    """The files the engine loads and the chain they came from (None: a network of no chain).

    ``meta`` is ``''`` for no meta classifier.
    """

    chain: Chain | None
    model: str
    priors: str
    meta: str


def is_chain_name(model: str) -> bool:
    """Return whether ``model`` reads as a chain name: no file of that name, no path or suffix."""
    return NAME.fullmatch(model) is not None and not Path(model).is_file()


def resolve(model: str | Path, priors: str | Path = '', meta: str | Path = '',
            models: str | Path | None = None, verify: bool = True) -> Resolved:
    """Return the files of ``model`` (a chain name, an ONNX path, or ``''``: the default chain).

    A chain's priors and meta bundle fill an empty ``priors`` / ``meta``; given ones are kept
    (the engine refuses a mismatch); ``meta`` ``'none'``: no meta classifier. An ONNX path takes
    the chain that lists it (:func:`chain_of_model`); a network of no chain needs its priors and
    has no meta bundle unless given. Raises :class:`ChainError` (one line) for an unknown name
    and, with ``verify``, for a chain whose members do not match their digests.
    """
    model, priors, meta = str(model).strip() or DEFAULT_CHAIN, str(priors), str(meta)
    if is_chain_name(model):
        chain = load_chain(model, models)
    elif Path(model).expanduser().is_file():
        chain = chain_of_model(Path(model).expanduser(), models)
    else:
        chain = None  # a missing file: the engine names it
    if chain is not None and verify:
        chain.verify()
    network = str(chain.network) if chain is not None and is_chain_name(model) else model
    chain_meta = str(chain.meta) if chain is not None and chain.meta is not None else ''
    return Resolved(chain, network,
                    priors or (str(chain.priors) if chain is not None else ''),
                    '' if meta == NO_META else meta or chain_meta)


def _percent(value: float | None) -> str:
    """Return a share as a percentage with one decimal."""
    return 'n/a' if value is None else f'{value:.1f}'


def accuracy_text(chain: Chain) -> str:
    """Return the chain's measured network accuracy and speed in one phrase, with its source."""
    network = chain.measured.get('network')
    if not network:
        return 'accuracy not measured'
    return (f"mIoU {_percent(network.get('miou'))}, human ({network.get('human', '?')}) IoU "
            f"{_percent(network.get('human_iou'))} on {network.get('on', '?')}, "
            f"{network.get('ms_per_frame', float('nan')):.0f} ms per frame "
            f"({network.get('source', '?')})")


def startup_report(chain: Chain | None, model: str, precision: str, backend: str
                   ) -> tuple[bool, str]:
    """Return ``(warn, line)``: which chain runs (name, kind, network, precision) and its accuracy.

    ``warn`` is true for a toy chain, which is not a street network.
    """
    if chain is None:
        return False, (f'chain: none (network {model} is in no chain manifest; its accuracy was '
                       f'not measured here), {precision} on {backend}')
    line = (f'chain {chain.name} ({chain.kind}{", the default" if chain.is_default else ""}): '
            f'{chain.summary}; network {model}, {precision} on {backend}; measured: '
            f'{accuracy_text(chain)}')
    if chain.kind == 'toy':
        return True, (f"{line}. {chain.name} is a toy chain, not a street network (trained on "
                      f"{chain.trained_on.get('network', '?')}): for tests and demos only; on "
                      f'a camera run a street chain (metafusion models lists them; default '
                      f'{DEFAULT_CHAIN})')
    return False, line
