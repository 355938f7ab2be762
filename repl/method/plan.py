"""The plan: which blocks a method acts on (docs/method.md, "Plan"). Pure, JSON-serialisable data.

Rules for `repl`, `drop` and `freeze` (all three get the same blocks for the same config):
- k = round(ratio * N) with round half up (computed in decimal, so 0.25 * 10 gives 3, not 2);
- the first and last blocks are never replaced and no two replaced blocks are adjacent, so at
  most floor((N - 1) / 2) blocks;
- a block is considered only when fusion can pair it with both neighbours (`fusion.pairable`: they
  share tensors by name and every shared tensor is adaptable). In a model of one block kind every
  block qualifies; in a model that mixes kinds (BasicBlock and Bottleneck stages, conv and
  attention blocks) the blocks next to a change of kind do not, and the plan lists them (`unpaired`);
- `boundary=avoid` prefers blocks whose two neighbours have the same parameter shapes as the
  block itself (this excludes stage-boundary blocks and the blocks next to them); the fewest
  other blocks are taken, only when k cannot be met otherwise. `allow` treats all alike.
- `select=uniform` spreads the k blocks evenly: slot j aims at the centre of the j-th of k equal
  segments of the sequence, (j + 1/2) * N / k - 1/2, and the valid set with the fewest
  non-preferred blocks and then the least total distance to those targets is chosen (exact
  integer dynamic programme, deterministic). `random` uses the same programme with seeded random
  weights per block in place of distances. `similarity` uses it with each block's score
  (repl/method/similarity.py: how alike its neighbours are) and takes the valid set with the fewest
  non-preferred blocks and then the largest total score; the scores are recorded in the plan.
  `explicit` takes `repl.blocks` as given (checked against the rules; `boundary` does not apply and
  `ratio` is ignored).

Which of these a method gets is its record's `selection` (repl/method/registry.py): the chosen
blocks above (`repl`, `drop`, `freeze`), the whole sequence (`stochastic_depth`, `layerdrop`:
`select` and `boundary` do not apply), or none (`bp`). Plain backprop (bp, or ratio 0 of a method
whose knob is the ratio) gives an empty plan.
"""
from __future__ import annotations

import math
import random
from dataclasses import MISSING, asdict, dataclass, field, fields
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from repl.errors import CheckpointError, ConfigError
from repl.families import BlockInfo
from repl.method.config import Boundary, ReplConfig, Select
from repl.method.fusion import pairable
from repl.method.registry import Selection, get_method

SETTING_KEYS = (
    "select", "boundary", "fusion", "adapt", "surrogate", "neighbor_grad", "seed", "init", "init_a", "init_b",
    "similarity", "survival_last", "stochastic_depth",
)
Scorer = Callable[[], Mapping[int, float]]  # select=similarity: each considered block's score, computed on demand


@dataclass
class Plan:
    """Which blocks a method acts on, and the switches it was made with."""

    method: str
    family: str
    num_blocks: int
    ratio: float  # the configured ratio; len(blocks) / num_blocks for explicit plans and methods that do not read it
    blocks: List[int]
    paths: List[str]
    max_ratio: float  # max_replaceable(num_blocks) / num_blocks
    settings: Dict[str, Any] = field(default_factory=dict)  # the ReplConfig switches as applied (SETTING_KEYS)
    params_replaced: int = 0  # set by whoever applies the plan
    params_fusion: int = 0
    unpaired: List[int] = field(default_factory=list)  # blocks 1..N-2 not considered: a neighbour fusion cannot pair
    scores: Optional[Dict[int, float]] = None  # select=similarity: the score of every considered block, chosen by

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-serialisable dict (for checkpoints and summary.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Plan":
        """Inverse of to_dict; CheckpointError if a required field is missing."""
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in d]
        if missing:
            raise CheckpointError(f"saved plan lacks {', '.join(missing)}; it was not written by this version of repl")
        values = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        # a plan saved before a switch existed was made with its default; JSON makes the score keys strings
        values["settings"] = {**{k: v for k, v in _default_settings().items() if k not in values.get("settings", {})},
                              **values.get("settings", {})}
        if values.get("scores") is not None:
            values["scores"] = {int(i): float(v) for i, v in values["scores"].items()}
        return cls(**values)

    def describe(self) -> str:
        """Human lines printed at the start of a run."""
        n, family = self.num_blocks, self.family
        record = get_method(self.method)
        if record.describe is not None and self.blocks:
            return record.describe(self)
        if not self.blocks:
            return f"plan: method={self.method}, nothing replaced: all {n} {family} blocks trained end to end"
        allowed = round(self.max_ratio * n)
        lines = [
            f"plan: method={self.method}, {len(self.blocks)} of {n} {family} blocks {record.verb} "
            f"(ratio {self.ratio:g}; at most {allowed}, ratio {self.max_ratio:.3f})",
            "  blocks: " + ", ".join(f"{i} {p}" for i, p in zip(self.blocks, self.paths)),
            "  settings: " + " ".join(f"{k}={v}" for k, v in self.settings.items()),
        ]
        if self.unpaired:
            lines.append("  not considered (a neighbour of another kind, which fusion cannot pair): "
                         + ", ".join(str(i) for i in self.unpaired))
        if self.scores is not None:
            lines.append(f"  scores (similarity={self.settings.get('similarity')}, higher is chosen first): "
                         + ", ".join(f"{i} {v:.4f}" for i, v in sorted(self.scores.items())))
        if self.params_replaced or self.params_fusion:
            lines.append(f"  params: replaced={self.params_replaced:,} fusion={self.params_fusion:,}")
        return "\n".join(lines)

    @property
    def skips_blocks(self) -> bool:
        """Whether some blocks are skipped on some training batches, so their parameters get no gradient then."""
        return bool(self.blocks) and get_method(self.method).skips_blocks(self.settings)

    def same_as(self, other: "Plan") -> bool:
        """Whether a checkpoint made under `other` can resume under this plan."""
        return all(getattr(self, k) == getattr(other, k) for k in RESUME_KEYS)


RESUME_KEYS = ("method", "family", "num_blocks", "blocks", "paths", "settings")  # what a resumed plan must share


def _default_settings() -> Dict[str, Any]:
    defaults = ReplConfig()
    return {k: getattr(defaults, k) for k in SETTING_KEYS}


def max_replaceable(num_blocks: int) -> int:
    """floor((N - 1) / 2): first and last are never replaced and no two replaced blocks are adjacent."""
    return max(0, (num_blocks - 1) // 2)


def considered(blocks: Sequence[BlockInfo]) -> List[bool]:
    """Per block, whether a plan may choose it: not first or last, and fusion pairs it with both neighbours."""
    n = len(blocks)
    return [0 < i < n - 1 and pairable(blocks[i], blocks[i - 1]) and pairable(blocks[i], blocks[i + 1])
            for i in range(n)]


def max_choosable(allowed: Sequence[bool]) -> int:
    """The most blocks a plan can take among the `allowed` ones, no two adjacent: ceil(L / 2) per run of L."""
    total = run = 0
    for ok in list(allowed) + [False]:
        if ok:
            run += 1
        else:
            total, run = total + (run + 1) // 2, 0
    return total


def replace_count(ratio: float, num_blocks: int) -> int:
    """k = round(ratio * N), rounding halves up, computed in decimal."""
    return int((Decimal(str(ratio)) * num_blocks).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def make_plan(blocks: Sequence[BlockInfo], cfg: ReplConfig, scorer: Optional[Scorer] = None) -> Plan:
    """The plan for a model's block sequence under a validated config; ConfigError names the bad key.

    `scorer` (select=similarity, required there) returns each considered block's score; it is called only
    once the count is validated, so a bad ratio stops before any scoring compute."""
    cfg.validate()
    n = len(blocks)
    family = blocks[0].family if blocks else ""
    ratio = float(cfg.ratio)
    record = get_method(cfg.method)
    allowed = considered(blocks)
    unpaired = [i for i in range(1, n - 1) if not allowed[i]] if record.selection is Selection.CHOSEN else []
    scores = None
    if record.selection is Selection.NONE or cfg.is_plain_backprop:
        chosen, ratio = [], 0.0
    elif record.selection is Selection.ALL:
        chosen = list(range(n))
        if not record.uses_ratio:
            ratio = 1.0 if n else 0.0
    elif cfg.select == Select.EXPLICIT:
        chosen = _checked_explicit(list(cfg.blocks), n, family, blocks, allowed)
        ratio = len(chosen) / n if n else 0.0
    else:
        k = _checked_count(ratio, n, family, allowed)
        if cfg.select == Select.SIMILARITY:
            if scorer is None:
                raise ConfigError("repl.select=similarity needs block scores: call repl.apply_replacement, "
                                  "or pass make_plan a scorer (repl.method.similarity.block_scores)")
            given = scorer()
            scores = {i: float(given[i]) for i in range(n) if allowed[i]}
        chosen = _choose(k, blocks, cfg, allowed, scores)
    return Plan(
        method=cfg.method,
        family=family,
        num_blocks=n,
        ratio=ratio,
        blocks=chosen,
        paths=[blocks[i].path for i in chosen],
        max_ratio=max_choosable(allowed) / n if n else 0.0,
        settings={k: getattr(cfg, k) for k in SETTING_KEYS},
        unpaired=unpaired,
        scores=scores,
    )


def planned_blocks(plan: Plan, blocks: Sequence[BlockInfo]) -> List[BlockInfo]:
    """The BlockInfo of each planned block; ConfigError if the plan was made for another model."""
    if plan.num_blocks != len(blocks) or any(blocks[i].path != p for i, p in zip(plan.blocks, plan.paths)):
        raise ConfigError(
            f"the plan (repl.*) was made for {plan.num_blocks} {plan.family} blocks at {plan.paths}, "
            f"which this model of {len(blocks)} blocks does not have"
        )
    return [blocks[i] for i in plan.blocks]


def _checked_count(ratio: float, n: int, family: str, considered_blocks: Sequence[bool]) -> int:
    """k for the ratio, or ConfigError if it is more than the model allows or rounds to none."""
    k, allowed = replace_count(ratio, n), max_choosable(considered_blocks)
    if k > allowed:
        limit = f"repl.ratio <= {math.floor(allowed / n * 1000) / 1000:.3f}" if allowed else "use repl.ratio=0"
        mixed = (f": {n - 2 - sum(considered_blocks)} inner blocks have a neighbour of another kind"
                 if allowed < max_replaceable(n) else "")
        raise ConfigError(
            f"repl.ratio={ratio:g} asks for {k} of {n} blocks; this {family} model allows at most {allowed}{mixed} ({limit})"
        )
    if ratio > 0 and k == 0:
        raise ConfigError(
            f"repl.ratio={ratio:g} rounds to 0 of {n} blocks; use repl.ratio=0 for plain backprop "
            f"or repl.ratio >= {math.ceil(0.5 / n * 1000) / 1000:.3f}"
        )
    return k


def _checked_explicit(indices: List[Any], n: int, family: str, blocks: Sequence[BlockInfo],
                      considered_blocks: Sequence[bool]) -> List[int]:
    """repl.blocks sorted, or ConfigError naming the first rule it breaks."""
    shown = f"repl.blocks={indices}"
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise ConfigError(f"{shown}: must be block indices (integers 1..{n - 2})")
    chosen = sorted(indices)
    for i in chosen:
        if not 0 <= i < n:
            raise ConfigError(f"{shown}: block {i} is out of range; this {family} model has blocks 0..{n - 1}")
        if i in (0, n - 1):
            raise ConfigError(f"{shown}: block {i} is the first or last block, never replaced (choose from 1..{n - 2})")
        if not considered_blocks[i]:
            kinds = f"{blocks[i - 1].kind}, {blocks[i].kind}, {blocks[i + 1].kind}"
            raise ConfigError(f"{shown}: block {i} ({blocks[i].path}) has a neighbour fusion cannot pair with it "
                              f"(kinds {kinds}); choose blocks whose neighbours are of their own kind")
    for a, b in zip(chosen, chosen[1:]):
        if a == b:
            raise ConfigError(f"{shown}: block {a} is listed twice")
        if b == a + 1:
            raise ConfigError(
                f"{shown}: blocks {a} and {b} are adjacent; each replaced block needs two trained neighbours"
            )
    return chosen


def _choose(k: int, blocks: Sequence[BlockInfo], cfg: ReplConfig, allowed: Sequence[bool],
            scores: Optional[Mapping[int, float]] = None) -> List[int]:
    """k valid blocks: fewest non-preferred (boundary=avoid), then least cost (uniform, random, or -score)."""
    n = len(blocks)
    if k == 0:
        return []
    shapes = [b.param_shapes for b in blocks]
    preferred = [
        cfg.boundary == Boundary.ALLOW or (0 < i < n - 1 and shapes[i - 1] == shapes[i] == shapes[i + 1]) for i in range(n)
    ]
    if cfg.select == Select.UNIFORM:
        def cost(slot: int, i: int) -> Tuple[int, float]:  # |i - target| scaled by 2k to stay integer
            return (not preferred[i], abs(2 * k * i - ((2 * slot + 1) * n - k)))
    else:
        if cfg.select == Select.SIMILARITY:  # least total -score: the largest total score (the most alike neighbours)
            weight = [-(scores or {}).get(i, 0.0) for i in range(n)]
        else:
            rng = random.Random(cfg.seed)
            weight = [rng.random() for _ in range(n)]

        def cost(slot: int, i: int) -> Tuple[int, float]:
            return (not preferred[i], weight[i])

    return _least_cost_independent_set(n, k, cost, allowed)


def _least_cost_independent_set(n: int, k: int, cost: Callable[[int, int], Tuple[int, float]],
                                allowed: Sequence[bool]) -> List[int]:
    """Increasing `allowed` positions p_0 < ... < p_{k-1} in 1..n-2, pairwise non-adjacent, minimising sum cost(j, p_j).

    best[i][j]: least cost of filling slots 0..j-1 with positions < i. Ties keep the earlier position.
    """
    inf = (math.inf, math.inf)
    best = [[inf] * (k + 1) for _ in range(n + 1)]
    take = [[False] * (k + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        best[i][0] = (0, 0)
    for i in range(2, n):  # position i - 1 in 1..n-2 considered for slot j - 1
        for j in range(1, k + 1):
            best[i][j] = best[i - 1][j]
            prev = best[i - 2][j - 1]
            if prev != inf and allowed[i - 1]:
                c = cost(j - 1, i - 1)
                candidate = (prev[0] + c[0], prev[1] + c[1])
                if candidate < best[i][j]:
                    best[i][j], take[i][j] = candidate, True
    chosen, i, j = [], n - 1, k
    while j:
        if take[i][j]:
            chosen.append(i - 1)
            i, j = i - 2, j - 1
        else:
            i -= 1
    return chosen[::-1]
