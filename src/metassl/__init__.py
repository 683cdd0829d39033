"""metassl: semi-supervised image classification with meta-gradient (Zhang et al., AISTATS 2021)."""
from .config import Config
from .errors import UserError

__version__ = "0.1.0"


__all__ = ["Config", "build_config", "UserError", "load", "TrainedModel", "meta_gradient", "correct_pseudo_labels",
           "MetaSSLClassifier"]


def __getattr__(name: str):
    """Lazy exports: `metassl.MetaSSLClassifier` imports scikit-learn and `metassl.load` the
    predictor only when asked for, and importing `metassl.data` or `metassl.config` does not load the algorithms."""
    if name == "build_config":          # merges presets with the registry's keys: algorithms.base.build_config
        from .algorithms import build_config
        return build_config
    if name in ("meta_gradient", "correct_pseudo_labels"):
        from .algorithms import meta_gradient
        return getattr(meta_gradient, name)
    if name in ("load", "TrainedModel"):
        from .inference import predict
        return getattr(predict, name)
    if name == "MetaSSLClassifier":
        from .estimator import MetaSSLClassifier
        return MetaSSLClassifier
    raise AttributeError(f"module 'metassl' has no attribute {name!r}")
