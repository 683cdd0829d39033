"""metassl: semi-supervised image classification with meta-gradient (Zhang et al., AISTATS 2021)."""
from .algorithms import meta_gradient, correct_pseudo_labels
from .config import Config, build_config
from .errors import UserError

__version__ = "0.1.0"


__all__ = ["Config", "build_config", "UserError", "meta_gradient", "correct_pseudo_labels", "MetaSSLClassifier"]


def __getattr__(name: str):
    """Lazy exports: `metassl.MetaSSLClassifier` imports scikit-learn only when asked for."""
    if name == "MetaSSLClassifier":
        from .estimator import MetaSSLClassifier
        return MetaSSLClassifier
    raise AttributeError(f"module 'metassl' has no attribute {name!r}")
