"""Backbones by name: build_model("wrn-28-2", num_classes=10). Importing the modules registers them."""
from metassl.models.registry import MODELS, build_model, check_model_name, model_names, natural_shape, register
from metassl.models import cnn, mlp, resnet, wrn  # noqa: F401  (registers the built-in models)
from metassl.models.cnn import ConvLarge, SmallCNN
from metassl.models.fold import inference_copy
from metassl.models.mlp import MLP
from metassl.models.resnet import ResNet
from metassl.models.wrn import WideResNet

__all__ = ["MODELS", "build_model", "check_model_name", "model_names", "natural_shape", "register", "inference_copy",
           "ConvLarge", "SmallCNN", "MLP", "ResNet", "WideResNet"]
