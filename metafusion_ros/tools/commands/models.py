"""``metafusion models``: the shipped chains with their accuracy and speed; write, refresh them.

``metafusion models`` lists the chains of ``models/`` (members checked against their SHA-256);
``metafusion models write NAME --network ... --priors ... [--meta ...] --kind ...`` writes
``NAME.chain.json`` beside the network from its member files and measured results;
``metafusion models refresh [NAME ...]`` rewrites manifests from their own member names and
result files (``make results`` runs it last). The format is
:mod:`metafusion_ros.runtime.chains`'.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import re
import sys
from typing import Any

from metafusion_ros.runtime.chains import (Chain, chain_names, ChainError, FORMAT, KINDS,
                                           load_chain, package_folder, sha256_of, SUFFIX)
from metafusion_ros.tools.cli import CommandError, output_path

__all__ = ['register', 'write_chain', 'refresh_chain', 'listing']

ALPHA, TAU, FUSION = 1.0, 0.5, 'reference'  # the operating point a manifest records


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``models`` with its ``write`` and ``refresh`` actions (none: list)."""
    parser = subparsers.add_parser(
        'models', help='list the shipped chains (network + priors + meta bundle) with their '
                       'measured accuracy and speed; write or refresh a chain manifest',
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', type=Path, default=None,
                        help="folder of the chains (default: the package's models/)")
    parser.add_argument('--json', action='store_true', help='print the manifests as JSON')
    parser.set_defaults(func=_list)
    sub = parser.add_subparsers(dest='models_command', metavar='ACTION')
    write = sub.add_parser('write', help='write NAME.chain.json beside the network')
    write.add_argument('name', help='chain name (letters, digits, _ and -)')
    write.add_argument('--network', required=True, type=Path, help='fp32 ONNX network')
    write.add_argument('--priors', required=True, type=Path, help='priors .npz beside it')
    write.add_argument('--meta', type=Path, help='meta bundle manifest beside it')
    write.add_argument('--kind', required=True, choices=KINDS,
                       help='street: a network for real cameras; toy: tests and demos only')
    write.add_argument('--summary', help='one line (default: from the network spec)')
    write.add_argument('--trained-on', help='what the network was trained on (default: from '
                                            'its spec)')
    write.add_argument('--miou', type=Path, help='`metafusion miou --out` JSON of the network')
    write.add_argument('--evaluate', type=Path,
                       help='`metafusion evaluate` JSON of the chain (its .md beside it)')
    write.set_defaults(func=_write)
    write.add_argument('--force', action='store_true', help='write over an existing manifest')
    refresh = sub.add_parser('refresh', help='rewrite manifests from their members and results')
    refresh.add_argument('names', nargs='*', help='chains to refresh (default: all)')
    refresh.set_defaults(func=_refresh)


# writing ------------------------------------------------------------------------------------
def _member(role: str, path: Path) -> dict[str, str]:
    """Return the manifest entry of file ``path``."""
    return {'role': role, 'file': path.name, 'sha256': sha256_of(path)}


def _beside(folder: Path, path: Path, what: str) -> Path:
    """Return ``path`` if it is an existing file in ``folder``, else raise naming ``what``."""
    if not path.is_file():
        raise CommandError(f'{what} {path} does not exist')
    if path.resolve().parent != folder.resolve():
        raise CommandError(f'{what} {path} is not beside the network in {folder}: a chain\'s '
                           f'members share one folder')
    return path


def _network_members(network: Path) -> list[dict[str, str]]:
    """Return the network, its spec and, when present, the INT8 network and its spec."""
    from metafusion_ros.runtime.segmenter.spec import sidecar_path

    spec = sidecar_path(network)
    if spec is None:
        raise CommandError(f'network {network}: no spec file beside it')
    members = [_member('network', network), _member('network_spec', spec)]
    int8 = network.with_name(f'{network.stem}.int8.onnx')
    if int8.is_file():
        members.append(_member('network_int8', int8))
        int8_spec = sidecar_path(int8)
        if int8_spec is not None:
            members.append(_member('network_int8_spec', int8_spec))
    return members


def _meta_members(meta: Path) -> list[dict[str, str]]:
    """Return the bundle manifest and every booster it lists."""
    try:
        boosters = [str(m['model_file']) for m in json.loads(meta.read_text())['members']]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CommandError(f'meta bundle {meta}: no readable member list ({exc})') from exc
    return [_member('meta', meta)] + [
        _member('meta_member', _beside(meta.parent, meta.parent / name, 'bundle member'))
        for name in boosters]


def _spec_data(network: Path) -> dict[str, Any]:
    """Return the network's spec as JSON/YAML data."""
    from metafusion_ros.runtime.segmenter.spec import ModelSpec, sidecar_path

    return ModelSpec.load(sidecar_path(network)).to_dict()


def _summary(spec: dict[str, Any]) -> str:
    """Return the default one-line summary: architecture, classes, input size."""
    pre = spec['preprocess']
    table = spec.get('table') or {}
    architecture = (spec.get('architecture') or {}).get('name', 'network')
    return (f"{architecture}, {spec.get('num_classes')} {table.get('name', '')} classes, input "
            f"{pre['width']}x{pre['height']}").replace('  ', ' ')


def _network_training(spec: dict[str, Any]) -> str:
    """Return what the network was trained on, from its spec (pretrained or metafusion train)."""
    if 'pretrained' in spec:
        source = spec['pretrained']
        return f"{source.get('trained_on', '?')} (weights {source.get('file', '?')}, " \
               f"{source.get('source', '?')})"
    training = spec.get('training') or {}
    if training:
        width, height = training.get('input_size', ('?', '?'))
        return (f"{training.get('dataset')} train split (metafusion train, "
                f"{training.get('epochs_done')} epochs at {width}x{height})")
    raise CommandError('the network spec says nothing about its training: give --trained-on')


def _priors_training(priors: Path) -> str:
    """Return where the priors come from (their provenance)."""
    from metafusion_ros.core.priors import Priors

    loaded = Priors.load(priors)
    origin = loaded.provenance
    mapping = f", labels read as {origin['labels_read_as']}" if origin.get('labels_read_as') \
        else ''
    return (f"{origin.get('dataset', loaded.dataset)} {origin.get('split', '')} labels under "
            f"{origin.get('root', '?')} ({loaded.num_images} label maps{mapping}), "
            f"{loaded.level} level, smoothing {origin.get('smoothing', 0):g}")


def _read_json(path: Path, what: str) -> Any:
    """Read a results JSON file or raise naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CommandError(f'{what} {path}: not readable JSON ({exc})') from exc


def _pct(value: float | None) -> float | None:
    """Return a share as a percentage, two decimals."""
    return None if value is None else round(100 * value, 2)


def _network_results(path: Path, network: Path) -> dict[str, Any]:
    """Return the ``network`` block from a ``metafusion miou`` report of ``network``."""
    report = _read_json(path, 'miou results')
    command = (f"metafusion miou --dataset {report['dataset']} --root {report['root']} --split "
               f"{','.join(report['splits'])} --model {report['model']} --out {path}")
    if report.get('model_sha256') != sha256_of(network):
        raise CommandError(f'miou results {path} were measured on another network than '
                           f'{network} (SHA-256 differs): rerun {command}')
    total = report['all']
    mapping = f"; predictions mapped {report['mapping']}" if report.get('mapping') else ''
    threads = report.get('threads', 1)  # metafusion miou's default
    return {
        'on': f"{report['dataset']} {' + '.join(report['splits'])} ({total['images']} frames"
              f"{mapping})",
        'miou': _pct(total['miou']), 'human_iou': _pct(total['target_group_iou']),
        'human': '+'.join(total['target_group']), 'target_iou': _pct(total['target_iou']),
        'ms_per_frame': round(report['ms_per_frame_median'], 1),
        'speed': f'median time per frame (preprocessing, network on ONNX Runtime with '
                 f'{threads} thread, softmax resized to the labels); network input '
                 f"{report['input_size'][0]}x{report['input_size'][1]}",
        'source': str(path), 'command': command}


def _row(rows: list[dict[str, Any]], **wanted: Any) -> dict[str, Any]:
    """Return the first evaluation row with the ``wanted`` values."""
    for row in rows:
        if all(row.get(k) == v for k, v in wanted.items()):
            return row
    raise CommandError(f'no evaluation row with {wanted}')


def _report_line(report: Path, label: str) -> str:
    """Return the text after ``label`` on its line of the Markdown report beside the JSON."""
    try:
        text = report.read_text()
    except OSError as exc:
        raise CommandError(f'evaluation report {report}: {exc}') from exc
    found = re.search(rf'^{label}: (.*)$', text, re.MULTILINE)
    if found is None:
        raise CommandError(f'evaluation report {report}: no "{label}:" line')
    return found.group(1).strip().strip('`')


def _metafusion_results(path: Path) -> dict[str, Any]:
    """Return the ``metafusion`` block (α = 1, τ = 0.5, reference fusion) of an evaluation."""
    rows = _read_json(path, 'evaluation results')
    keys = ('fp', 'fn', 'delta', 'kept_share', 'miou')
    picked = {'bayes': _row(rows, rule='bayes'), 'ml': _row(rows, rule='ml', alpha=ALPHA),
              'metafusion': _row(rows, rule='metafusion', fusion=FUSION, alpha=ALPHA, tau=TAU)}
    report = path.with_suffix('.md')
    return {'on': _report_line(report, 'Frames').split(', network')[0],
            'alpha': ALPHA, 'tau': TAU, 'fusion': FUSION,
            'rules': {rule: {k: (_pct(row[k]) if k in ('kept_share', 'miou') else
                                 (None if row[k] is None else round(row[k], 3)))
                             for k in keys} for rule, row in picked.items()},
            'source': str(path), 'command': _report_line(report, 'Command')}


def write_chain(name: str, network: Path, priors: Path, meta: Path | None, kind: str,
                summary: str | None = None, trained_on: str | None = None,
                miou: Path | None = None, evaluate: Path | None = None,
                force: bool = False) -> Path:
    """Write ``<name>.chain.json`` beside ``network``; return its path (see runtime.chains).

    An existing manifest is refused unless ``force`` (the output rule of every command).
    """
    network = Path(network)
    folder = network.parent
    path = output_path(folder / f'{name}{SUFFIX}', force, 'chain manifest')
    _beside(folder, network, 'network')
    members = _network_members(network) + [_member('priors', _beside(folder, Path(priors),
                                                                     'priors'))]
    origin = {'priors': _priors_training(priors)}
    if meta is not None:
        members += _meta_members(_beside(folder, Path(meta), 'meta bundle'))
        origin['meta'] = str(_read_json(Path(meta), 'meta bundle').get('source', ''))
    spec = _spec_data(network)
    measured = {}
    if miou is not None:
        measured['network'] = _network_results(Path(miou), network)
    if evaluate is not None:
        measured['metafusion'] = _metafusion_results(Path(evaluate))
    manifest = {'format': FORMAT, 'name': name, 'kind': kind,
                'summary': summary or _summary(spec),
                'input': [spec['preprocess']['width'], spec['preprocess']['height']],
                'trained_on': {'network': trained_on or _network_training(spec), **origin},
                'members': members, 'measured': measured}
    path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + '\n')
    Chain.load(path)  # the reader accepts what was written (name, kind, members)
    return path


def refresh_chain(chain: Chain) -> Path:
    """Rewrite ``chain``'s manifest from its member names, texts and result files."""
    measured = chain.measured
    return write_chain(
        chain.name, chain.network, chain.priors, chain.meta, chain.kind, chain.summary,
        chain.trained_on.get('network'),
        Path(measured['network']['source']) if 'network' in measured else None,
        Path(measured['metafusion']['source']) if 'metafusion' in measured else None,
        force=True)


def _write(args: argparse.Namespace) -> int:
    """Write one manifest."""
    path = write_chain(args.name, args.network, args.priors, args.meta, args.kind, args.summary,
                       args.trained_on, args.miou, args.evaluate, args.force)
    print(f'wrote {path}')
    return 0


def _refresh(args: argparse.Namespace) -> int:
    """Refresh the named (or all) manifests."""
    folder = args.models or package_folder('models')
    for name in args.names or chain_names(folder):
        print(f'wrote {refresh_chain(load_chain(name, folder))}')
    return 0


# listing ------------------------------------------------------------------------------------
def _cell(value: Any, digits: int = 1) -> str:
    """Return a table cell: a number with ``digits`` decimals, or n/a."""
    return 'n/a' if value is None else f'{value:.{digits}f}'


def listing(chains: list[Chain], problems: dict[str, str]) -> str:
    """Return the table of ``metafusion models``: accuracy and speed, then MetaFusion, sources."""
    width = max([len('chain'), *(len(chain.name) + 2 for chain in chains)]) + 2
    lines = [f"{'chain':<{width}}{'kind':<8}{'members':<9}{'int8':<6}{'input':<10}{'mIoU':>6}"
             f"{'human':>7}{'ms/frame':>10}  measured on"]
    for chain in chains:
        net = chain.measured.get('network', {})
        size = 'x'.join(map(str, chain.input)) if chain.input else '?'
        lines.append(
            f"{chain.name + (' *' if chain.is_default else ''):<{width}}{chain.kind:<8}"
            f"{'CHANGED' if chain.name in problems else 'ok':<9}"
            f"{'yes' if chain.network_int8 is not None else 'no':<6}"
            f"{size:<10}{_cell(net.get('miou')):>6}"
            f"{_cell(net.get('human_iou')):>7}{_cell(net.get('ms_per_frame'), 0):>10}  "
            f"{net.get('on', 'not measured')}")
    lines += ['', f"MetaFusion at alpha {ALPHA:g}, tau {TAU:g} ({FUSION} fusion): FP / FN "
                  f"(delta), Bayes -> ML -> MetaFusion, kept share of ML's recoveries"]
    for chain in chains:
        block = chain.measured.get('metafusion')
        if not block:
            lines.append(f'{chain.name:<{width}}not measured')
            continue
        rules = block['rules']
        lines.append(
            f"{chain.name:<{width}}{rules['bayes']['fp']} / {rules['bayes']['fn']} -> "
            f"{rules['ml']['fp']} / {rules['ml']['fn']} ({_cell(rules['ml']['delta'])}) -> "
            f"{rules['metafusion']['fp']} / {rules['metafusion']['fn']} "
            f"({_cell(rules['metafusion']['delta'], 2)}), kept "
            f"{_cell(rules['metafusion']['kept_share'])} %; on {block['on']}")
    lines += ['', '* the default chain (ros2 launch without model:=, make demo). mIoU and human '
                  'IoU (%): the network alone, metafusion miou; ms/frame: its median time per '
                  'frame there on the machine that ran make results. Sources:']
    lines += [f"  {chain.name}: {', '.join(b['source'] for b in chain.measured.values())}"
              for chain in chains if chain.measured]
    return '\n'.join(lines)


def _list(args: argparse.Namespace) -> int:
    """List the chains; exit 2 naming each whose members changed."""
    folder = args.models or package_folder('models')
    chains = [load_chain(name, folder) for name in chain_names(folder)]
    if not chains:
        raise CommandError(f'no chain manifests (*{SUFFIX}) in {folder}')
    problems = {}
    for chain in chains:
        try:
            chain.verify()
        except ChainError as exc:
            problems[chain.name] = str(exc)
    if args.json:
        print(json.dumps([json.loads(c.path.read_text()) for c in chains], indent=1,
                         ensure_ascii=False))
    else:
        print(listing(chains, problems))
    for problem in problems.values():
        print(f'metafusion models: error: {problem}', file=sys.stderr)
    return 2 if problems else 0
