"""ModelConfig: the schema of the Hydra `model` group."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass
class ModelConfig:
    """Which network to build. Image size and class count come from the dataset config."""

    source: str = "repl"  # where `name` is looked up: repl (curated names) | timm | torchvision | hf_causal_lm
    name: str = "resnet32"  # a name of the source: repl.models.MODELS for repl, a timm / torchvision / HF name otherwise
    pretrained: bool = False  # load the source's pretrained weights (needs the hub or a cache)
    weights: Optional[str] = None  # a state_dict file to load after building (a classifier head of another shape skipped)
    weights_strict: bool = True  # false: load what fits of model.weights, even when other tensors are missing or unused
    kwargs: Dict[str, Any] = field(default_factory=dict)  # extra arguments for the model constructor
