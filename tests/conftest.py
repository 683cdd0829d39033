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


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny trainings on one thread (faster than two for 8x8 images), then restore."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real data, cache, env or network: HOME in tmp, METASSL_OFFLINE=1, Debian path pointed away."""
    from metassl.data import sources
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("METASSL_OFFLINE", "1")
    monkeypatch.delenv("METASSL_DATA", raising=False)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian"))


@pytest.fixture
def tiny_data() -> ImageData:
    return make_tiny_data()
