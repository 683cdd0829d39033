"""Model registry: backbones are picked by name (configs, CLI), and users can add their own."""
from __future__ import annotations

from typing import Callable

from torch import nn

from metassl.errors import UserError

# A factory is called as factory(num_classes=..., in_channels=..., image_size=...) -> nn.Module.
ModelFactory = Callable[..., nn.Module]
MODELS: dict[str, ModelFactory] = {}


def register(name: str, replace: bool = False) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that registers a model factory (or class) under `name`; refuses silent overwrites."""
    key = name.strip().lower()

    def decorator(factory: ModelFactory) -> ModelFactory:
        if key in MODELS and not replace:
            raise UserError(f"model name {name!r} is already registered; pick a new name or pass replace=True "
                            f"(registered: {', '.join(model_names())})")
        MODELS[key] = factory
        return factory

    return decorator


# Natural input (channels, size) per backbone for checks and benchmarks on random inputs; others: (3, 32).
NATURAL_SHAPES: dict[str, tuple[int, int]] = {"cnn": (1, 28), "mlp": (1, 8), "resnet18": (3, 64)}


def natural_shape(name: str) -> tuple[int, int]:
    """(channels, image size) a backbone is usually run at (Fashion-MNIST for cnn, ImageNet-like for resnet18)."""
    return NATURAL_SHAPES.get(name, (3, 32))


def model_names() -> list[str]:
    """Sorted names of all registered models (for help texts and error messages)."""
    return sorted(MODELS)


def check_image_size(model: str, image_size: int, minimum: int) -> None:
    """Raise UserError when `image_size` is too small for `model`'s downsampling."""
    if image_size < minimum:
        raise UserError(f"model {model!r} needs image_size >= {minimum}, got image_size={image_size}")


def check_model_name(name: str) -> str:
    """The registry key of `name`; a one-line UserError naming the choices when none is registered."""
    key = str(name).strip().lower()
    if key not in MODELS:
        raise UserError(f"model={name!r} is unknown; choose one of: {', '.join(model_names())}")
    return key


def build_model(name: str, num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Build a registered model whose forward maps float (N, C, H, W) to logits (N, num_classes)."""
    key = check_model_name(name)
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{arg} must be a positive integer, got {value!r}")
    model = MODELS[key](num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    # The rest of the library relies on this contract (t-SNE plots read features(), heads read fc).
    if not (isinstance(model, nn.Module) and callable(getattr(model, "features", None))
            and isinstance(getattr(model, "fc", None), nn.Linear)):
        raise UserError(f"model {name!r} must be an nn.Module with a features(x) method and an nn.Linear `fc`; "
                        f"got {type(model).__name__}")
    return model
