"""The models the method tests run on: the project's CIFAR ResNets and torchvision/timm ResNets
(basic and bottleneck blocks), with the input size each is exercised at."""
from typing import Callable, Dict

import timm
import torchvision
from torch import nn

from repl.models.cifar_resnet import CifarResNet

BUILDERS: Dict[str, Callable[[], nn.Module]] = {
    "resnet20": lambda: CifarResNet(20),
    "resnet32": lambda: CifarResNet(32),
    "resnet110": lambda: CifarResNet(110),
    "tv_resnet50": lambda: torchvision.models.resnet50(num_classes=10),
    "timm_resnet18": lambda: timm.create_model("resnet18", num_classes=10),
    "timm_resnet50": lambda: timm.create_model("resnet50", num_classes=10),
}
INPUT_SIZE = {"resnet20": 16, "resnet32": 32, "resnet110": 32, "tv_resnet50": 64, "timm_resnet18": 64, "timm_resnet50": 64}


def models(*names: str) -> Dict[str, tuple]:
    """{name: (builder, input size)} for the named models."""
    return {name: (BUILDERS[name], INPUT_SIZE[name]) for name in names}
