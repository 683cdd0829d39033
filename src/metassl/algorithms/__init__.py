"""Algorithms: each module defines one training step; importing registers it by name."""
from .base import ALGORITHMS, Algorithm, Batch, StepContext, build_algorithm, register
from . import metamixup, supervised  # noqa: F401  (registration)
from . import (fixmatch, fully_supervised, meanteacher, metafixmatch, mixmatch,  # noqa: F401  (registration)
               pimodel, pseudolabel, vat)
from .meta_gradient import correct_pseudo_labels, meta_gradient

__all__ = ["ALGORITHMS", "Algorithm", "Batch", "StepContext", "build_algorithm", "register",
           "meta_gradient", "correct_pseudo_labels"]
