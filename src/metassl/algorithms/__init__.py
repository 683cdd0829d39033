"""Algorithms: each module defines one training step; importing registers it by name.

`meta_gradient` is the module of the meta-gradient functions (`meta_gradient.meta_gradient`,
`meta_gradient.correct_pseudo_labels`); nothing here shadows a module name.
"""
from ..batch import Batch
from .base import (ALGORITHMS, Algorithm, StepContext, StepOutput, build_algorithm, build_config, register,
                   without_unread)
from . import (fixmatch, flexmatch, freematch, fully_supervised, meanteacher, meta_gradient,  # noqa: F401
               metafixmatch, metaflexmatch, metamixup, mixmatch, mpl, pimodel, pseudolabel, selftrain, softmatch, supervised,  # (registration)
               vat)

__all__ = ["ALGORITHMS", "Algorithm", "Batch", "StepContext", "StepOutput", "build_algorithm", "build_config", "register",
           "without_unread", "meta_gradient"]
