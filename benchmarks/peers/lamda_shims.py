"""Two names LAMDA-SSL 1.0.2 imports that scikit-learn 1.9 no longer has; import this before LAMDA_SSL."""
import torchvision_shim  # noqa: F401  (before LAMDA_SSL imports torchvision)
import sklearn.utils
from sklearn.base import ClassifierMixin
from sklearn.utils.extmath import _approximate_mode

sklearn.utils._approximate_mode = _approximate_mode    # LAMDA_SSL/Split/DataSplit.py imports it from here
ClassifierMixin._estimator_type = "classifier"          # FixMatch.__init__ reads it (now an estimator tag)
