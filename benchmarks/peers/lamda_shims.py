"""What LAMDA-SSL 1.0.2 needs to run against scikit-learn 1.9 and torch 2.13; import this before LAMDA_SSL."""
import torchvision_shim  # noqa: F401  (before LAMDA_SSL imports torchvision)
import sklearn.utils
from sklearn.base import ClassifierMixin
from sklearn.utils.extmath import _approximate_mode
from torch.optim import lr_scheduler

sklearn.utils._approximate_mode = _approximate_mode    # LAMDA_SSL/Split/DataSplit.py imports it from here
ClassifierMixin._estimator_type = "classifier"          # FixMatch.__init__ reads it (now an estimator tag)

import LAMDA_SSL.Scheduler.CosineAnnealingLR as _cosine  # noqa: E402


def _init_scheduler(self, optimizer):
    """Its default cosine passes `verbose=`, which torch's schedulers no longer take: the same schedule without it."""
    return lr_scheduler.CosineAnnealingLR(optimizer=optimizer, T_max=self.T_max, eta_min=self.eta_min,
                                          last_epoch=self.last_epoch)


_cosine.CosineAnnealingLR.init_scheduler = _init_scheduler
