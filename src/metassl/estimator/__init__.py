"""`MetaSSLClassifier`: the trainer behind scikit-learn's fit/predict (classifier.py), with a recipe for
small data (recipe.py)."""
from .classifier import MetaSSLClassifier

__all__ = ["MetaSSLClassifier"]
