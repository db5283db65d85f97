"""The meta classifier (§3, §4, eq. 13): P(true positive) of a disagreeing candidate segment.

Gradient boosting as in the paper (27 stages of depth 3, 5 features per split; 15 stages for
image classification), here XGBoost with ``binary:logistic`` (XGBoost has no exponential loss).
The minority label is re-weighted (``scale_pos_weight``) where the reference oversampled it with
SMOTE. Features may be standardised as in the reference (trees do not need it).

A model is two files, never a pickle:

- the booster, XGBoost JSON (``*.json``) or UBJ (``*.ubj``);
- a JSON manifest next to it (``<stem>.manifest.json``) recording the ordered feature schema, the
  class table (and its fingerprint), the target class ``c``, α, the digest of the priors, the
  standardisation, the hyper-parameters, a training-data summary, metrics and library versions.

:meth:`MetaClassifier.load` refuses a model whose schema, class table, target, α or priors do not
match the runtime configuration and says which.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
import hashlib
import json
from pathlib import Path
import platform
import sys
from typing import Any

import numpy as np

from ..core.classes import ClassTable

__all__ = ['MetaParams', 'ModelContext', 'MetaClassifier', 'check_training_set',
           'manifest_path', 'FORMAT']

FORMAT = 'metafusion-meta/1'
# Two α values closer than this are the same operating point.
ALPHA_TOLERANCE = 1e-9


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
    """The runtime configuration a meta model belongs to: schema, class table, α, priors."""

    feature_names: tuple[str, ...]
    table: ClassTable
    alpha: float
    priors_digest: str = ''

    def to_dict(self) -> dict[str, Any]:
        """Serialise for the manifest."""
        return {'feature_names': list(self.feature_names), 'class_table': self.table.to_dict(),
                'class_table_fingerprint': self.table.fingerprint,
                'target': self.table.target, 'target_name': self.table.target_name,
                'alpha': float(self.alpha), 'priors_digest': self.priors_digest}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'ModelContext':
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(str(n) for n in data['feature_names']),
                   ClassTable.from_dict(data['class_table']), float(data['alpha']),
                   str(data.get('priors_digest', '')))

    def mismatches(self, runtime: 'ModelContext') -> list[str]:
        """Return a description of every way ``runtime`` differs from this (model) context."""
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
        if abs(runtime.alpha - self.alpha) > ALPHA_TOLERANCE:
            problems.append(f'alpha differs: model fitted at {self.alpha:g}, runtime '
                            f'{runtime.alpha:g}')
        if runtime.priors_digest and self.priors_digest and \
                runtime.priors_digest != self.priors_digest:
            problems.append(f'priors differ: model {self.priors_digest}, runtime '
                            f'{runtime.priors_digest}')
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


def manifest_path(model_path: str | Path) -> Path:
    """Return the manifest path belonging to a booster file (``<stem>.manifest.json``)."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + '.manifest.json')


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


def _sha256(path: Path) -> str:
    """Return the hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class MetaClassifier:
    """A fitted meta classifier; call it (or :meth:`predict_proba`) as the pipeline's score_fn."""

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

    def manifest(self, model_file: str, model_sha256: str) -> dict[str, Any]:
        """Return the manifest dictionary (see module docstring)."""
        import sklearn
        import xgboost

        standardize = None if self.mean is None else {'mean': self.mean.tolist(),
                                                      'scale': self.scale.tolist()}
        return {'format': FORMAT, 'model_file': model_file, 'model_sha256': model_sha256,
                **self.context.to_dict(), 'params': asdict(self.params),
                'standardize': standardize, **self.info,
                'versions': {'xgboost': xgboost.__version__, 'numpy': np.__version__,
                             'scikit-learn': sklearn.__version__,
                             'metafusion_ros': _package_version(),
                             'python': platform.python_version()}}

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write the booster (``.json`` or ``.ubj``) and its manifest; return both paths."""
        path = Path(path)
        if path.suffix not in ('.json', '.ubj'):
            raise ValueError(f'meta model {path}: use a .json or .ubj file name')
        if path.name.endswith('.manifest.json'):
            raise ValueError(f'meta model {path}: that name is reserved for the manifest')
        path.parent.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(path))
        target = manifest_path(path)
        target.write_text(json.dumps(self.manifest(path.name, _sha256(path)), indent=1) + '\n')
        return path, target

    @classmethod
    def load(cls, path: str | Path, runtime: ModelContext | None = None) -> 'MetaClassifier':
        """Read a model (booster or manifest path); refuse it if it does not fit ``runtime``."""
        xgb = _import_xgboost()

        path = Path(path)
        meta_path = path if path.name.endswith('.manifest.json') else manifest_path(path)
        manifest = _read_manifest(meta_path)
        name = str(manifest.get('model_file', ''))
        if not name or Path(name).name != name:
            raise ValueError(f'meta model manifest {meta_path}: model_file {name!r} is not a file '
                             f'name beside the manifest')
        model_file = meta_path.with_name(name)
        if path != meta_path and name != path.name:
            raise ValueError(f'meta model {path}: its manifest {meta_path} describes the booster '
                             f'{name!r}, not {path.name!r}')
        if not model_file.is_file():
            raise FileNotFoundError(f'meta model {meta_path}: booster file {model_file} '
                                    f'does not exist')
        if manifest.get('model_sha256') != _sha256(model_file):
            raise ValueError(f'meta model {model_file}: file does not match the SHA-256 '
                             f'recorded in {meta_path}')
        try:
            context = ModelContext.from_dict(manifest)
            params = MetaParams(**manifest['params'])
            mean, scale = _standardization(manifest.get('standardize'), len(context.feature_names))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f'meta model manifest {meta_path}: malformed ({type(exc).__name__}: '
                             f'{exc})') from exc
        if runtime is not None:
            problems = context.mismatches(runtime)
            if problems:
                raise ValueError(f'meta model {meta_path} does not match the runtime '
                                 f'configuration: ' + '; '.join(problems))
        booster = xgb.Booster()
        try:
            booster.load_model(str(model_file))
        except xgb.core.XGBoostError as exc:
            raise ValueError(f'meta model {model_file}: not a readable XGBoost model') from exc
        if booster.num_features() != len(context.feature_names):
            raise ValueError(f'meta model {model_file}: booster has {booster.num_features()} '
                             f'features, manifest {len(context.feature_names)}')
        info = {k: manifest[k] for k in ('training', 'metrics') if k in manifest}
        return cls(booster, context, params, mean, scale, info)


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
    """Read and check a manifest JSON file."""
    if not path.is_file():
        raise FileNotFoundError(f'meta model manifest {path} does not exist')
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f'meta model manifest {path}: not valid JSON ({exc})') from exc
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
        raise ValueError(f'meta model manifest {path}: unknown format '
                         f'{manifest.get("format") if isinstance(manifest, dict) else None!r}, '
                         f'expected {FORMAT!r}')
    return manifest
