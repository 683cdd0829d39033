"""Data: load standard data sets into `ImageData` and choose which training labels to keep."""
from metassl.data.sources import DATASETS, ImageData, load_dataset
from metassl.data.split import Split, labeled_split

__all__ = ["DATASETS", "ImageData", "Split", "labeled_split", "load_dataset"]
