"""Which weights each backbone of a run starts from: the `--weights` value, parsed.

A run can compare an ImageNet CNN with a clip network whose Kinetics weights are a converted file, so
one value for every backbone is not enough. Items are comma-separated:

* `VALUE` (`imagenet`, `none` or a weights file): every backbone that has weights;
* `NAME=VALUE`: backbone NAME only (a registered name, also inside a fused one such as
  `mobilenet_v2+track`).

E.g. `--weights r2plus1d_18=r21d.npz` (the others keep their defaults), `--weights none` (random
starts everywhere), `--weights none,mobilenet_v2=imagenet`. A backbone without weights (pose, track,
flow_hof) ignores VALUE. A file whose path starts like `name=` or holds a comma needs another name
(or `./` in front of the first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...core.errors import ConfigError

_NAMED = re.compile(r"^([a-z][a-z0-9_]*)=(.*)$")
EXAMPLE = "e.g. --weights imagenet,r2plus1d_18=r21d.npz"


@dataclass(frozen=True)
class WeightsChoice:
    """A parsed `--weights` value: the value for every backbone (None: each its default) and per-name values."""

    default: str | None = None
    named: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str | None) -> WeightsChoice:
        """ConfigError (naming the item and the fix) for an empty item, two defaults or a name given twice."""
        if spec is None or str(spec) == "":
            return cls()
        default: str | None = None
        named: dict[str, str] = {}
        for item in str(spec).split(","):
            item = item.strip()
            match = _NAMED.match(item)
            if not item or (match and not match.group(2).strip()):
                raise ConfigError(f"--weights {spec}: item {item!r} is empty; give VALUE or NAME=VALUE, {EXAMPLE}")
            if match:
                name, value = match.group(1), match.group(2).strip()
                if name in named:
                    raise ConfigError(f"--weights {spec}: backbone {name} is given twice; give it once")
                named[name] = value
            elif default is not None:
                raise ConfigError(f"--weights {spec}: two values for every backbone ({default!r}, {item!r}); give "
                                  f"one, and NAME=VALUE for the others, {EXAMPLE}")
            else:
                default = item
        return cls(default, tuple(named.items()))

    def names(self) -> list[str]:
        return [name for name, _ in self.named]

    def value_for(self, name: str) -> str | None:
        """The weights of registered backbone `name` (None: its own default)."""
        return dict(self.named).get(name, self.default)
