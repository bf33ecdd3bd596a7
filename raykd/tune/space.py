"""Search spaces over recipe fields, and the trial plans they make.

A dimension is a dotted recipe field (the override syntax of `raykd.config`: `train.lr` applies
to every stage, `stages.0.loss.params.temperature` to one) and a domain, written the same way on
the command line and in YAML:

    loss.params.temperature=choice:[0.5,1,2]     one of these values (grid: each of them)
    train.lr=loguniform:1e-5:1e-4                log-uniform in [1e-5, 1e-4]
    loss.params.gamma=uniform:0:2                uniform in [0, 2]
    data.num_negatives=randint:3:8               an integer in [3, 8)
    stages.0.loss.params.temperature=2           a constant (same for every trial)

In YAML, under `space:`, each field maps to the same text (`"choice:[0.5, 1, 2]"`), to a list
(a choice) or to `{loguniform: [1e-5, 1e-4]}`. Grid search enumerates every combination of the
choices (a range is an error there); random search draws `num_samples` seeded trials from the
domains; Optuna samples them adaptively (Ray Tune's `OptunaSearch`).
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from raykd.errors import ConfigError

KINDS = ("choice", "uniform", "loguniform", "randint")


@dataclass(frozen=True)
class Dimension:
    """One swept field: `kind` is choice (values) or a range (low, high)."""

    field: str
    kind: str
    values: tuple = ()
    low: float | None = None
    high: float | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"space.{self.field}",
                              f"unknown domain {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.kind == "choice" and not self.values:
            raise ConfigError(f"space.{self.field}", "a choice needs at least one value")
        if self.kind != "choice":
            if self.low is None or self.high is None or not self.low < self.high:
                raise ConfigError(f"space.{self.field}",
                                  f"{self.kind} needs low < high, got {self.low}, {self.high}")
            if self.kind == "loguniform" and self.low <= 0:
                raise ConfigError(f"space.{self.field}", "loguniform needs low > 0")

    @property
    def is_range(self) -> bool:
        return self.kind != "choice"

    def corners(self) -> list:
        """The values that bound what this dimension can produce (validated up front)."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "randint":
            return [int(self.low), int(self.high) - 1]
        return [float(self.low), float(self.high)]

    def sample(self, rng: random.Random):
        if self.kind == "choice":
            return rng.choice(self.values)
        if self.kind == "uniform":
            return rng.uniform(self.low, self.high)
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.randrange(int(self.low), int(self.high))

    def tune_domain(self):
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.values))
        return {"uniform": tune.uniform, "loguniform": tune.loguniform,
                "randint": tune.randint}[self.kind](self.low, self.high)

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice:{json.dumps(list(self.values))}"
        return f"{self.kind}:{self.low}:{self.high}"


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(where, f"{text!r} is not a number") from None


def parse_domain(field: str, spec: Any) -> Dimension:
    """A dimension from its text (`choice:[...]`, `loguniform:lo:hi`, a constant), a list or a
    one-key mapping (`{uniform: [lo, hi]}`)."""
    where = f"space.{field}"
    if isinstance(spec, list):
        return Dimension(field, "choice", tuple(spec))
    if isinstance(spec, Mapping):
        if len(spec) != 1:
            raise ConfigError(where, f"a domain mapping has one key ({', '.join(KINDS)})")
        (kind, args), = spec.items()
        if kind == "choice":
            return Dimension(field, "choice", tuple(args if isinstance(args, list) else [args]))
        if not isinstance(args, list) or len(args) != 2:
            raise ConfigError(where, f"{kind} takes [low, high], got {args!r}")
        return Dimension(field, str(kind), low=_number(str(args[0]), where),
                         high=_number(str(args[1]), where))
    if isinstance(spec, str) and ":" in spec:
        kind, _, rest = spec.partition(":")
        kind = kind.strip()
        if kind == "choice":
            values = yaml.safe_load(rest)
            if not isinstance(values, list):
                raise ConfigError(where, f"choice takes a list, e.g. choice:[1,2], got {rest!r}")
            return Dimension(field, "choice", tuple(values))
        if kind in KINDS:
            parts = rest.split(":")
            if len(parts) != 2:
                raise ConfigError(where, f"{kind} takes low:high, got {rest!r}")
            return Dimension(field, kind, low=_number(parts[0], where),
                             high=_number(parts[1], where))
        raise ConfigError(where, f"unknown domain {kind!r}; use one of {', '.join(KINDS)}")
    return Dimension(field, "choice", (spec,))  # a constant


def parse_space(cli: list[str] | None = None, yaml_space: Mapping | None = None
                ) -> list[Dimension]:
    """Dimensions from a YAML `space:` mapping, then `field=domain` items (which win)."""
    dims: dict[str, Dimension] = {}
    for field, spec in (yaml_space or {}).items():
        dims[str(field)] = parse_domain(str(field), spec)
    for item in cli or []:
        if "=" not in item:
            raise ConfigError(item, "a search dimension looks like field.path=domain")
        field, text = (s.strip() for s in item.split("=", 1))
        spec = text if ":" in text else yaml.safe_load(text)
        dims[field] = parse_domain(field, spec)
    if not dims:
        raise ConfigError("space", "nothing to sweep: give --space FILE or field=domain items")
    return list(dims.values())


def format_value(value: Any) -> str:
    """A value as override text that `raykd.config.parse_value` reads back unchanged (floats
    always carry a dot: YAML reads `1e-05` as a string, `1.0e-05` as a float)."""
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    return json.dumps(value)


def as_overrides(config: Mapping[str, Any]) -> list[str]:
    return [f"{field}={format_value(value)}" for field, value in config.items()]


def grid_trials(dims: list[Dimension], repeats: int = 1) -> list[dict]:
    """Every combination of the choices (first dimension slowest), `repeats` times."""
    ranged = [d.field for d in dims if d.is_range]
    if ranged:
        raise ConfigError(f"space.{ranged[0]}", "grid search takes choices only; use "
                                                "choice:[...] or --search random/optuna")
    combos = itertools.product(*(d.values for d in dims))
    trials = [dict(zip([d.field for d in dims], combo, strict=True)) for combo in combos]
    return trials * max(1, repeats)


def random_trials(dims: list[Dimension], num_samples: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{d.field: d.sample(rng) for d in dims} for _ in range(num_samples)]


def corner_trials(dims: list[Dimension]) -> list[dict]:
    """Each dimension's bounding values with the others at their first: what adaptive search
    can produce, checked field by field before the sweep starts."""
    base = {d.field: d.corners()[0] for d in dims}
    out = [dict(base)]
    for d in dims:
        for value in d.corners()[1:]:
            out.append({**base, d.field: value})
    return out
