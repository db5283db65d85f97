"""The meta classifier (§3, §4, eq. 13): P(true positive) of a disagreeing candidate segment.

Gradient boosting as in the paper (27 stages of depth 3, 5 features per split; 15 stages for
image classification), here XGBoost with ``binary:logistic`` (XGBoost has no exponential loss).
The minority label is re-weighted (``scale_pos_weight``) where the reference oversampled it with
SMOTE. Features may be standardised as in the reference (trees do not need it).

Candidates depend on α (eq. 15, 16), so one classifier is fitted per α of a grid (the paper's:
0.9, 0.95, 0.975, 0.99, 0.995, 1) and they travel as one *bundle*, never a pickle:

- the manifest (``<name>.json``, format ``metafusion-meta-bundle/1``) records the ordered
  feature schema, the class table (and its fingerprint), the target class ``c``, the digests of
  the priors and of the network, the hyper-parameters, the training source, library versions and
  one entry per member: α, file name, SHA-256, standardisation, training counts and out-of-fold
  metrics;
- one XGBoost JSON booster per α beside it (``<name>.a<α>.json``).

:meth:`MetaBundle.load` refuses a bundle whose schema, class table, target, priors or network do
not match the runtime configuration, or that has no member for the runtime α under the grid
policy of :meth:`MetaBundle.select` (the nearest member within :data:`ALPHA_REACH`), and says
which.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
import hashlib
import json
from pathlib import Path
import platform
import sys
from typing import Any

import numpy as np

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.files import check_file_size, MAX_BOOSTER_BYTES, naming, read_json

__all__ = ['MetaParams', 'ModelContext', 'MetaClassifier', 'MetaBundle', 'AlphaChoice',
           'check_training_set', 'FORMAT', 'ALPHA_REACH']

FORMAT = 'metafusion-meta-bundle/1'
# Two α values closer than this are the same operating point.
ALPHA_TOLERANCE = 1e-9
# A runtime α is served by the nearest member of the bundle's grid when it lies at most this far
# from it (the paper's grid 0.9 ... 1 serves α in [0.8, 1]); farther, the bundle is refused.
ALPHA_REACH = 0.1


@dataclass(frozen=True)
class MetaParams:
    """Hyper-parameters of the boosted trees (paper: 27 stages, depth 3, 5 features per split)."""

    n_estimators: int = 27
    max_depth: int = 3
    learning_rate: float = 0.3
    features_per_split: int = 5
    balance: bool = True
    standardize: bool = False
    seed: int = 0
    threads: int = 1

    def xgboost_params(self, num_features: int, pos_weight: float) -> dict[str, Any]:
        """Return the XGBoost training parameters for ``num_features`` columns."""
        return {
            'objective': 'binary:logistic', 'eval_metric': 'auc', 'tree_method': 'hist',
            'max_depth': self.max_depth, 'eta': self.learning_rate,
            'colsample_bynode': min(1.0, self.features_per_split / max(num_features, 1)),
            'scale_pos_weight': pos_weight, 'seed': self.seed, 'nthread': self.threads,
            'verbosity': 0,
        }


@dataclass(frozen=True)
class ModelContext:
    """The configuration a meta model belongs to: schema, class table, α, priors, network.

    ``priors_digest`` is :attr:`Priors.digest`, ``network_digest`` the SHA-256 of the ONNX file;
    an empty digest is not recorded (e.g. a model fitted on saved softmax files) and not checked.
    """

    feature_names: tuple[str, ...]
    table: ClassTable
    alpha: float
    priors_digest: str = ''
    network_digest: str = ''

    def to_dict(self) -> dict[str, Any]:
        """Serialise for the manifest."""
        return {'feature_names': list(self.feature_names), 'class_table': self.table.to_dict(),
                'class_table_fingerprint': self.table.fingerprint,
                'target': self.table.target, 'target_name': self.table.target_name,
                'alpha': float(self.alpha), 'priors_digest': self.priors_digest,
                'network_digest': self.network_digest}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'ModelContext':
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(str(n) for n in data['feature_names']),
                   ClassTable.from_dict(data['class_table']), float(data['alpha']),
                   str(data.get('priors_digest', '')), str(data.get('network_digest', '')))

    def mismatches(self, runtime: 'ModelContext') -> list[str]:
        """Return every way ``runtime`` differs from this (model) context, α aside.

        α is matched by the bundle's grid policy (:meth:`MetaBundle.select`).
        """
        problems = []
        if tuple(runtime.feature_names) != self.feature_names:
            problems.append(_schema_difference(self.feature_names, runtime.feature_names))
        ours = {k: v for k, v in self.table.to_dict().items() if k != 'target'}
        theirs = {k: v for k, v in runtime.table.to_dict().items() if k != 'target'}
        if ours != theirs:
            keys = sorted(k for k in ours if ours[k] != theirs.get(k))
            problems.append(f'class table differs ({", ".join(keys)}): model '
                            f'{self.table.name!r} {self.table.fingerprint}, runtime '
                            f'{runtime.table.name!r} {runtime.table.fingerprint}')
        if ours == theirs and runtime.table.target != self.table.target:
            problems.append(f'target class differs: model {self.table.target_name!r}, '
                            f'runtime {runtime.table.target_name!r}')
        if runtime.priors_digest and self.priors_digest and \
                runtime.priors_digest != self.priors_digest:
            problems.append(f'priors differ: model {self.priors_digest}, runtime '
                            f'{runtime.priors_digest}')
        if runtime.network_digest and self.network_digest and \
                runtime.network_digest != self.network_digest:
            problems.append(f'network differs: model fitted on the outputs of network '
                            f'{self.network_digest[:16]}, runtime network '
                            f'{runtime.network_digest[:16]} (SHA-256 of the ONNX file)')
        return problems


def _schema_difference(model: tuple[str, ...], runtime: tuple[str, ...]) -> str:
    """Describe how two feature schemas differ."""
    missing = [n for n in model if n not in runtime]
    extra = [n for n in runtime if n not in model]
    if missing or extra:
        return (f'feature schema differs: model has {len(model)} features, runtime '
                f'{len(runtime)}; missing at runtime {missing[:5]}, unknown to model {extra[:5]}')
    first = next(i for i, (a, b) in enumerate(zip(model, runtime)) if a != b)
    return (f'feature schema order differs from position {first}: model {model[first]!r}, '
            f'runtime {runtime[first]!r}')


def check_training_set(features: np.ndarray, labels: np.ndarray, what: str = 'training set'
                       ) -> None:
    """Raise ``ValueError`` for an empty or single-class training set (eq. 13 labels)."""
    features, labels = np.asarray(features), np.asarray(labels)
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f'{what}: features must be (n, F) with n labels, got '
                         f'{features.shape} and {labels.shape}')
    if features.shape[0] == 0:
        raise ValueError(f'{what}: no candidate segments (ML and Bayes agree on class c '
                         f'everywhere, e.g. a very confident network or small alpha); '
                         f'nothing to train a meta classifier on')
    positives = int(np.count_nonzero(labels))
    if positives in (0, labels.size):
        kind = 'true positives' if positives else 'false positives'
        raise ValueError(f'{what}: all {labels.size} candidates are {kind}; a meta classifier '
                         f'needs both labels, refusing to train on a single class')
    if not np.isfinite(features).all():
        raise ValueError(f'{what}: features contain NaN or Inf')


def _import_xgboost() -> Any:
    """Import xgboost without its scikit-learn wrappers unless scikit-learn is loaded already.

    ``xgboost`` imports scikit-learn when it is installed, only for its estimator classes, which
    this package does not use: 1.2-1.3 s of the node's start-up on a 2-core machine.
    """
    if 'xgboost' in sys.modules or 'sklearn' in sys.modules:
        import xgboost
        return xgboost
    sys.modules['sklearn'] = None  # makes `import sklearn` fail inside xgboost only
    try:
        import xgboost
    finally:
        del sys.modules['sklearn']
    return xgboost


@dataclass
class MetaClassifier:
    """A classifier fitted at one α; :meth:`predict_proba` is the pipeline's score_fn."""

    booster: Any
    context: ModelContext
    params: MetaParams = field(default_factory=MetaParams)
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, context: ModelContext,
            params: MetaParams = MetaParams()) -> 'MetaClassifier':
        """Train on candidate features ``(n, F)`` and eq. 13 labels (1 = true positive)."""
        import xgboost as xgb

        features = np.asarray(features, dtype=np.float64)
        labels = np.asarray(labels).astype(bool)
        check_training_set(features, labels)
        if features.shape[1] != len(context.feature_names):
            raise ValueError(f'features have {features.shape[1]} columns, the schema '
                             f'{len(context.feature_names)}')
        mean = scale = None
        if params.standardize:
            mean = features.mean(axis=0)
            scale = np.where(features.std(axis=0) > 0, features.std(axis=0), 1.0)
        positives = int(labels.sum())
        pos_weight = (labels.size - positives) / positives if params.balance else 1.0
        model = cls(None, context, params, mean, scale)
        data = xgb.DMatrix(model._prepare(features), label=labels.astype(np.float32))
        model.booster = xgb.train(params.xgboost_params(features.shape[1], pos_weight), data,
                                  num_boost_round=params.n_estimators)
        model.info['training'] = {'candidates': int(labels.size), 'true_positives': positives,
                                  'false_positives': int(labels.size - positives),
                                  'scale_pos_weight': pos_weight}
        return model

    def _prepare(self, features: np.ndarray) -> np.ndarray:
        """Check the column count and apply the standardisation, if any."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != len(self.context.feature_names):
            raise ValueError(f'meta classifier expects (n, {len(self.context.feature_names)}) '
                             f'features, got shape {features.shape}')
        if self.mean is not None:
            features = (features - self.mean) / self.scale
        return features

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Return ``P(true positive)`` per candidate, ``(n,)`` float64 (0 candidates: empty)."""
        import xgboost as xgb

        features = self._prepare(features)
        if features.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        return self.booster.predict(xgb.DMatrix(features)).astype(np.float64)

    __call__ = predict_proba

    def importances(self) -> np.ndarray:
        """Return the total gain per feature, normalised to sum 1 (Figure 6)."""
        gain = self.booster.get_score(importance_type='total_gain')
        values = np.zeros(len(self.context.feature_names))
        for key, value in gain.items():
            values[int(key[1:])] = value
        total = values.sum()
        return values / total if total > 0 else values

    def record(self, model_file: str, model_sha256: str) -> dict[str, Any]:
        """Return this member's entry of the bundle manifest."""
        standardize = None if self.mean is None else {'mean': self.mean.tolist(),
                                                      'scale': self.scale.tolist()}
        return {'alpha': float(self.context.alpha), 'model_file': model_file,
                'model_sha256': model_sha256, 'standardize': standardize, **self.info}

    @classmethod
    def from_record(cls, record: dict[str, Any], shared: dict[str, Any], params: MetaParams,
                    folder: Path, where: str) -> 'MetaClassifier':
        """Load the member ``record`` of a manifest (``where`` names it in errors)."""
        xgb = _import_xgboost()

        try:
            context = ModelContext.from_dict({**shared, 'alpha': record['alpha']})
            mean, scale = _standardization(record.get('standardize'),
                                           len(context.feature_names))
            name = str(record['model_file'])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f'{where}: malformed member ({type(exc).__name__}: {exc})') from exc
        where = f'{where}, member for alpha {context.alpha:g}'
        if not name or Path(name).name != name:
            raise ValueError(f'{where}: model_file {name!r} is not a file name beside the '
                             f'manifest')
        model_file = folder / name
        if not model_file.is_file():
            raise FileNotFoundError(f'{where}: booster file {model_file} does not exist')
        check_file_size(model_file, MAX_BOOSTER_BYTES, f'{where}: booster')
        if record.get('model_sha256') != _sha256(model_file):
            raise ValueError(f'{where}: file {model_file} does not match the SHA-256 recorded '
                             f'in the manifest')
        booster = xgb.Booster()
        try:
            booster.load_model(str(model_file))
        except xgb.core.XGBoostError as exc:
            raise ValueError(f'{where}: {model_file} is not a readable XGBoost model') from exc
        if booster.num_features() != len(context.feature_names):
            raise ValueError(f'{where}: booster has {booster.num_features()} features, manifest '
                             f'{len(context.feature_names)}')
        info = {k: record[k] for k in ('training', 'metrics') if k in record}
        return cls(booster, context, params, mean, scale, info)


def _sha256(path: Path) -> str:
    """Return the hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class AlphaChoice:
    """Which member of a bundle serves a runtime α: ``alpha`` (the member's) for ``requested``."""

    requested: float
    alpha: float

    @property
    def exact(self) -> bool:
        """Return whether the member was fitted at the requested α."""
        return abs(self.requested - self.alpha) <= ALPHA_TOLERANCE

    def describe(self) -> str:
        """Return ``exact`` or ``nearest to alpha <requested>`` (diagnostics)."""
        return 'exact' if self.exact else f'nearest grid point to alpha {self.requested:g}'


@dataclass(eq=False)
class MetaBundle:
    """Meta classifiers of one network, priors and class table, one per α of a grid."""

    members: dict[float, MetaClassifier]
    skipped: dict[float, str] = field(default_factory=dict)
    source: str = ''
    path: Path | None = None

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError('a meta model bundle needs at least one member')
        first = next(iter(self.members.values()))
        for alpha, member in self.members.items():
            if replace(member.context, alpha=first.context.alpha) != first.context or \
                    member.params != first.params or abs(member.context.alpha - alpha) > \
                    ALPHA_TOLERANCE:
                raise ValueError(f'bundle member for alpha {alpha:g} belongs to another '
                                 f'schema, table, priors, network or parameters')
        self.members = dict(sorted(self.members.items()))

    @property
    def context(self) -> ModelContext:
        """Return the members' shared schema, table and digests (α: the grid's largest)."""
        return self.members[self.alphas[-1]].context

    @property
    def alphas(self) -> tuple[float, ...]:
        """Return the grid, ascending."""
        return tuple(self.members)

    def _name(self) -> str:
        """Return how errors name this bundle."""
        return f'meta model bundle {self.path}' if self.path else 'meta model bundle'

    def select(self, alpha: float) -> AlphaChoice:
        """Return the member serving ``alpha``: the nearest, if within :data:`ALPHA_REACH`.

        Raise ``ValueError`` naming the grid when no member is that close.
        """
        if not 0.0 <= alpha <= 1.0:  # also nan
            raise ValueError(f'alpha must lie in [0, 1], got {alpha}')
        nearest = min(self.alphas, key=lambda a: (abs(a - alpha), -a))
        if abs(nearest - alpha) > ALPHA_REACH + ALPHA_TOLERANCE:
            grid = ', '.join(f'{a:g}' for a in self.alphas)
            raise ValueError(f'{self._name()} has no classifier for alpha {alpha:g}: its grid is '
                             f'{grid} and the nearest member ({nearest:g}) is more than '
                             f'{ALPHA_REACH:g} away')
        return AlphaChoice(float(alpha), nearest)

    def classifier(self, alpha: float) -> MetaClassifier:
        """Return the member serving ``alpha`` (see :meth:`select`)."""
        return self.members[self.select(alpha).alpha]

    def manifest(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Return the manifest dictionary (see module docstring) for the member ``records``."""
        import sklearn
        import xgboost

        shared = self.context.to_dict()
        del shared['alpha']
        first = self.members[self.alphas[-1]]
        return {'format': FORMAT, **shared, 'params': asdict(first.params),
                'source': self.source, 'members': records,
                'skipped': [{'alpha': a, 'reason': r} for a, r in sorted(self.skipped.items())],
                'versions': {'xgboost': xgboost.__version__, 'numpy': np.__version__,
                             'scikit-learn': sklearn.__version__,
                             'metafusion_ros': _package_version(),
                             'python': platform.python_version()}}

    def save(self, path: str | Path) -> list[Path]:
        """Write the members (``<stem>.a<α>.json``) and the manifest ``path``; return them all."""
        path = Path(path)
        if path.suffix != '.json':
            raise ValueError(f'meta model bundle {path}: use a .json file name')
        path.parent.mkdir(parents=True, exist_ok=True)
        written, records = [], []
        for alpha, member in self.members.items():
            member_path = path.with_name(f'{path.stem}.a{alpha:g}.json')
            member.booster.save_model(str(member_path))
            records.append(member.record(member_path.name, _sha256(member_path)))
            written.append(member_path)
        path.write_text(json.dumps(self.manifest(records), indent=1) + '\n')
        self.path = path
        return written + [path]

    @classmethod
    def load(cls, path: str | Path, runtime: ModelContext | None = None) -> 'MetaBundle':
        """Read a bundle; refuse it if it does not fit ``runtime``.

        Schema, class table, target, priors and network must match, and a member must serve
        ``runtime.alpha`` (:meth:`select`). Every member is loaded and checked against its
        SHA-256.
        """
        path = Path(path)
        with naming('meta model bundle', path):
            return cls._load(path, runtime)

    @classmethod
    def _load(cls, path: Path, runtime: ModelContext | None) -> 'MetaBundle':
        """Read the bundle ``path`` (see :meth:`load`)."""
        manifest = _read_manifest(path)
        where = f'meta model bundle {path}'
        try:
            shared = {k: v for k, v in manifest.items() if k not in ('members', 'skipped')}
            context = ModelContext.from_dict({**shared, 'alpha': 1.0})
            params = MetaParams(**manifest['params'])
            records = list(manifest['members'])
            skipped = {float(s['alpha']): str(s['reason']) for s in manifest.get('skipped', [])}
            alphas = [float(r['alpha']) for r in records]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f'{where}: malformed manifest ({type(exc).__name__}: {exc})') \
                from exc
        if not records:
            raise ValueError(f'{where}: the manifest lists no members')
        _check_grid(alphas, where)
        if runtime is not None:
            problems = context.mismatches(runtime)
            if problems:
                raise ValueError(f'{where} does not match the runtime configuration: '
                                 + '; '.join(problems))
        members = {alpha: MetaClassifier.from_record(record, shared, params, path.parent, where)
                   for alpha, record in zip(alphas, records)}
        bundle = cls(members, skipped, str(manifest.get('source', '')), path)
        if runtime is not None:
            bundle.select(runtime.alpha)
        return bundle


def _check_grid(alphas: list[float], where: str) -> None:
    """Raise unless every member's α is finite, in [0, 1] and no two are the same (eq. 15)."""
    for index, alpha in enumerate(alphas):
        if not 0.0 <= alpha <= 1.0:  # also NaN
            raise ValueError(f'{where}: member {index} has alpha {alpha}; a member\'s alpha must '
                             f'be a number in [0, 1]')
    ordered = sorted(alphas)
    for low, high in zip(ordered, ordered[1:]):
        if high - low <= ALPHA_TOLERANCE:
            raise ValueError(f'{where}: two members have alpha {low:g}; each alpha of the grid '
                             f'must have one member')


def _package_version() -> str:
    """Return the installed metafusion_ros version (``unknown`` when run from a checkout)."""
    from importlib import metadata

    try:
        return metadata.version('metafusion_ros')
    except metadata.PackageNotFoundError:
        return 'unknown'


def _standardization(std: Any, num_features: int
                     ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Return the manifest's standardisation ``(mean, scale)``, each ``(F,)``, or Nones."""
    if std is None:
        return None, None
    mean = np.asarray(std['mean'], dtype=np.float64)
    scale = np.asarray(std['scale'], dtype=np.float64)
    if mean.shape != (num_features,) or scale.shape != (num_features,) or \
            not np.all(np.isfinite(mean)) or not np.all(scale > 0):
        raise ValueError(f'standardize needs {num_features} finite means and positive scales')
    return mean, scale


def _read_manifest(path: Path) -> dict[str, Any]:
    """Read and check a bundle manifest; name a bare booster or an old single-α model."""
    if not path.is_file():
        raise FileNotFoundError(f'meta model bundle {path} does not exist')
    manifest = read_json(path, 'meta model bundle')
    found = manifest.get('format') if isinstance(manifest, dict) else None
    if isinstance(manifest, dict) and 'learner' in manifest:
        raise ValueError(f'meta model bundle {path}: this is a bare XGBoost booster; give the '
                         f'bundle manifest written by metafusion fit')
    if found != FORMAT:
        hint = ' (a single-alpha model of an older version: refit it with metafusion fit)' \
            if found == 'metafusion-meta/1' else ''
        raise ValueError(f'meta model bundle {path}: unknown format {found!r}, expected '
                         f'{FORMAT!r}{hint}')
    return manifest
