"""ModelConfig: the schema of the Hydra `model` group."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass
class ModelConfig:
    """Which network to build. Image size and class count come from the dataset config."""

    name: str = "resnet32"  # registry name, see repl.models.MODELS
    pretrained: bool = False  # load the source's pretrained weights (needs the hub or a cache)
    weights: Optional[str] = None  # path to a state_dict file to load after building
    kwargs: Dict[str, Any] = field(default_factory=dict)  # extra arguments for the model constructor
