"""ReplConfig: every switch of the method and of its baselines (docs/method.md), validated before any compute."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from types import MappingProxyType
from typing import Any, List, Mapping, Optional, Union, get_args, get_origin, get_type_hints

from repl.bounds import SEED, bounds, check_numbers
from repl.errors import ConfigError
from repl.method.recompute import check_setting as check_recompute
from repl.method.registry import MethodRecord, Selection, get_method, method_names, methods_reading

NOT_SWITCHES = ("method", "ratio")  # every other key is a switch a method record accepts or leaves at its default


# The values of ReplConfig's choice fields, compared as these members (a config's plain string equals its member).
class Select(str, Enum):
    """repl.select: how the replaced blocks are chosen."""

    UNIFORM = "uniform"
    RANDOM = "random"
    EXPLICIT = "explicit"
    SIMILARITY = "similarity"


class Boundary(str, Enum):
    """repl.boundary: whether stage-boundary blocks may be replaced."""

    AVOID = "avoid"
    ALLOW = "allow"


class FusionMode(str, Enum):
    """repl.fusion: the shape of the fusion coefficients."""

    SCALAR = "scalar"
    TENSOR = "tensor"
    CHANNEL = "channel"


class Adapt(str, Enum):
    """repl.adapt: how a channel mismatch at a stage boundary is bridged."""

    TILE = "tile"
    LEARNED = "learned"


class SurrogateKind(str, Enum):
    """repl.surrogate: what the surrogate runs (the block's lite sub-layer or the whole block)."""

    LITE = "lite"
    FULL = "full"


class Init(str, Enum):
    """repl.init: how the fusion coefficients start."""

    HALF = "half"
    LSTSQ = "lstsq"


class Similarity(str, Enum):
    """repl.similarity: the block score of select=similarity."""

    WEIGHT = "weight"
    CKA = "cka"


CHOICE_ENUMS = {"select": Select, "boundary": Boundary, "fusion": FusionMode, "adapt": Adapt,
                "surrogate": SurrogateKind, "init": Init, "similarity": Similarity}
CHOICES = {key: tuple(member.value for member in kind) for key, kind in CHOICE_ENUMS.items()}  # plain strings


@dataclass
class ReplConfig:
    """How blocks are chosen and what replaces them. Also the schema of the Hydra `repl` group."""

    method: str = "repl"  # a registered method (repl.method.registry.method_names(): repl, bp and the baselines)
    ratio: float = field(default=0.25, metadata=bounds(ge=0, lt=1))  # fraction of the block sequence to replace (layerdrop: drop probability); 0 = plain backprop
    select: str = Select.UNIFORM.value  # uniform | random | explicit | similarity (the blocks whose neighbours are most alike)
    blocks: Optional[List[int]] = None  # block indices, with select=explicit
    boundary: str = Boundary.AVOID.value  # avoid | allow stage-boundary blocks
    fusion: str = FusionMode.SCALAR.value  # scalar | tensor | channel
    adapt: str = Adapt.TILE.value  # tile | learned: channel mismatch at stage boundaries
    surrogate: str = SurrogateKind.LITE.value  # lite | full
    neighbor_grad: bool = True  # neighbours receive gradient through the surrogate's use of their weights
    init: str = Init.HALF.value  # half: a, b start at init_a, init_b | lstsq: fitted so the synthesized tensors best match the block's own
    init_a: float = 0.5  # init=half: initial coefficient of the preceding block
    init_b: float = 0.5  # init=half: initial coefficient of the succeeding block
    similarity: str = Similarity.WEIGHT.value  # select=similarity: weight (neighbours' tensors, cosine) | cka (block input vs output on data)
    seed: int = field(default=0, metadata=SEED)  # for select=random
    survival_last: float = field(default=0.5, metadata=bounds(gt=0, le=1))  # stochastic_depth: survival probability of the last block (Huang et al.: 0.5)
    recompute: Union[bool, str] = "auto"  # true: surrogates keep no synthesized weight for backward, it is rebuilt there (same gradients) | false: kept | auto: rebuilt where it saves memory (repl/method/recompute.py)
    stochastic_depth: bool = False  # repl: also skip the blocks left trained per batch (Huang et al.); surrogates always run
    start: int = field(default=0, metadata=bounds(ge=0))  # repl: epochs of plain backprop before the planned blocks are replaced (on their trained neighbours)
    restore: int = field(default=0, metadata=bounds(ge=0))  # repl: last epochs with every surrogate baked back into a trainable block (full fine-tune)

    def validate(self) -> "ReplConfig":
        """Raise ConfigError naming the key if any value is outside what is accepted."""
        check_recompute(self.recompute)  # its own message names its three settings
        check_types(self, "repl.", {**CHOICES, "method": method_names()})
        check_numbers(self, "repl.")
        record = self.record
        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise ConfigError(f"repl.{key}={value!r} is not supported; choose one of {', '.join(allowed)}")
        if self.select == Select.EXPLICIT and not self.blocks:
            raise ConfigError("repl.select=explicit needs repl.blocks=[i,j,...] (block indices)")
        if self.blocks is not None and self.select != Select.EXPLICIT:
            raise ConfigError("repl.blocks is only used with repl.select=explicit")
        if self.similarity != _default("similarity") and self.select != Select.SIMILARITY:
            raise ConfigError(f"repl.similarity={self.similarity} is only used with repl.select=similarity")
        if self.init != Init.HALF:
            for key in ("init_a", "init_b"):
                if getattr(self, key) != _default(key):
                    raise ConfigError(f"repl.{key}={getattr(self, key)} applies to repl.init=half only; "
                                      f"repl.init={self.init} fits a and b itself")
        self._refuse_unread_switches(record)
        if record.validate is not None:
            record.validate(self)
        return self

    def _refuse_unread_switches(self, record: MethodRecord) -> None:
        """A switch set away from its default that this method does not read would be recorded but do nothing."""
        for f in fields(self):
            if f.name in NOT_SWITCHES or f.name in record.switches:
                continue
            value = getattr(self, f.name)
            default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
            if value != default:
                readers = methods_reading(f.name)
                raise ConfigError(f"repl.{f.name}={_shown(value)} applies to repl.method={'|'.join(readers) or 'none'}, "
                                  f"not {self.method}")

    @property
    def record(self) -> MethodRecord:
        """The registered record of `method` (ConfigError if there is none)."""
        return get_method(self.method)

    @property
    def is_plain_backprop(self) -> bool:
        """True when the run is plain end-to-end training (method bp or nothing to replace)."""
        record = self.record
        if record.selection is Selection.NONE:
            return True
        return record.uses_ratio and self.select != Select.EXPLICIT and float(self.ratio) == 0.0

    @property
    def skips_blocks(self) -> bool:
        """Whether some blocks are skipped on some training batches (their parameters then get no gradient)."""
        return not self.is_plain_backprop and self.record.skips_blocks(asdict(self))

    @property
    def skipping_setting(self) -> str:
        """The setting that makes blocks skip, for messages: the method and the on/off switches it has turned on."""
        defaults = ReplConfig()
        turned_on = [f"repl.{k}=true" for k in sorted(self.record.switches)
                     if isinstance(getattr(self, k), bool) and getattr(self, k) and not getattr(defaults, k)]
        return f"repl.method={self.method}" + (f" with {' and '.join(turned_on)}" if turned_on else "")


def check_types(config: Any, prefix: str = "", choices: Mapping[str, Sequence[str]] = MappingProxyType({})) -> None:
    """ConfigError naming the first field of the dataclass `config` whose value is not of its annotated type.

    The rule is read from the annotations (typing.get_type_hints), so a new field is checked as declared: a bool
    field takes a bool only (not "false", not 0); int an int (not a bool, not 1.5); float an int or a float (not a
    bool, not "0.25"); str a string; Optional[X] also None; List[X] a list or tuple of X; Union[X, Y] either.
    Through Hydra, OmegaConf has converted the command line's values to these types already. `choices`: the values
    a field takes, named in its message."""
    hints = get_type_hints(type(config))
    for f in fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        if not _is_a(value, hint):
            shown = f" (one of {', '.join(choices[f.name])})" if f.name in choices else ""
            raise ConfigError(f"{prefix}{f.name}={value!r} must be {_described(hint)}{shown}")


def _is_a(value: Any, hint: Any) -> bool:
    """Whether `value` is of the annotated type `hint` (the rules of check_types)."""
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union:
        return any(_is_a(value, arg) for arg in args)
    if origin in (list, tuple, Sequence):
        item = args[0] if args else Any
        return (isinstance(value, Sequence) and not isinstance(value, (str, bytes))
                and all(_is_a(v, item) for v in value))
    return isinstance(value, origin or hint)


def _described(hint: Any) -> str:
    """The annotated type `hint` in words, for check_types' message."""
    if hint is bool:
        return "true or false (a bool)"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if hint is type(None):
        return "None (null)"
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union:
        words = [_described(arg) for arg in args if arg is not type(None)]
        return " or ".join(words) + (", or None (null)" if type(None) in args else "")
    if origin in (list, tuple, Sequence):
        item = _described(args[0]) if args else "anything"
        return f"a list of {item.replace('an integer', 'integers').replace('a number', 'numbers')}"
    return f"a {getattr(hint, '__name__', hint)}"


def _default(key: str) -> Any:
    """The schema default of a ReplConfig key."""
    return next(f.default for f in fields(ReplConfig) if f.name == key)


def _shown(value: Any) -> str:
    """A value as written on the command line (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else str(value)
