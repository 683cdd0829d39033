"""Shared fixtures: a tiny, learnable synthetic data set so trainer tests run in seconds."""
import numpy as np
import pytest

from metassl.data import ImageData


def make_tiny_data(n_train: int = 240, n_test: int = 80, size: int = 12, classes: int = 4, seed: int = 0) -> ImageData:
    """Class k = a bright bar at row-band k plus noise: easy to learn, uint8 NHWC like real data."""
    rng = np.random.default_rng(seed)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % classes
        x = rng.integers(0, 60, (n, size, size, 1)).astype(np.int64)
        band = size // classes
        for k in range(classes):
            x[y == k, k * band:(k + 1) * band, :, :] += 150
        return x.clip(0, 255).astype(np.uint8), y.astype(np.int64)

    x, y = make(n_train)
    xt, yt = make(n_test)
    return ImageData(x, y, xt, yt, [f"c{k}" for k in range(classes)], flip=False, name="tiny")


@pytest.fixture
def tiny_data() -> ImageData:
    return make_tiny_data()
