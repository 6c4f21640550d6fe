"""Search spaces: a YAML mapping from a config's dotted option names to Optuna distributions.

```yaml
model.encoder.init_args.hidden_dim: {int: [100, 600], step: 50}
model.lr: {float: [1.0e-4, 3.0e-3], log: true}
model.readout: {categorical: [mean, sum, attention]}
```

Every name must be an option of the config being tuned (or a key of one of its free-form
parameter maps, such as a baseline's ``estimator.params``); a malformed distribution is refused
before any trial runs.
"""

from __future__ import annotations

import copy
import difflib
import json
import numbers
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from molml.errors import DataError

KINDS = ("int", "float", "categorical")
_OPTIONS = {"int": {"step", "log"}, "float": {"step", "log"}, "categorical": set()}


@dataclass(frozen=True)
class Param:
    """One searched option: ``name`` (dotted) and its distribution."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        """Draw this option's value for ``trial``."""
        if self.kind == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (stored with the study to recognise its search space)."""
        return {key: value for key, value in asdict(self).items() if value not in (None, ())}


def read_space(path: str | Path) -> list[Param]:
    """Read and check a search-space YAML file."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise DataError(f"search space {path}: not found") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"search space {path}: cannot read YAML ({exc})") from exc
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"search space {path}: expected a mapping of option names to distributions")
    return [_param(str(name), spec, path) for name, spec in raw.items()]


def _param(name: str, spec: Any, path: str | Path) -> Param:
    where = f"search space {path}: {name}"
    kinds = [kind for kind in KINDS if isinstance(spec, dict) and kind in spec]
    if len(kinds) != 1:
        raise DataError(
            f"{where}: give exactly one of {{int: [low, high]}}, {{float: [low, "
            f"high]}} or {{categorical: [choices]}}, got {spec!r}"
        )
    kind = kinds[0]
    unknown = set(spec) - {kind} - _OPTIONS[kind]
    if unknown:
        raise DataError(f"{where}: unknown key(s) {sorted(unknown)} for a {kind} distribution")
    if kind == "categorical":
        choices = spec[kind]
        if not isinstance(choices, list) or not choices:
            raise DataError(f"{where}: categorical needs a non-empty list of choices")
        bad = [c for c in choices if c is not None and not isinstance(c, (bool, int, float, str))]
        if bad:
            raise DataError(f"{where}: choices must be strings, numbers, booleans or null: {bad}")
        return Param(name, kind, choices=tuple(choices))
    bounds = spec[kind]
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or not all(isinstance(b, numbers.Real) and not isinstance(b, bool) for b in bounds)
    ):
        raise DataError(f"{where}: {kind} needs [low, high], two numbers, got {bounds!r}")
    if kind == "int" and not all(isinstance(b, numbers.Integral) for b in bounds):
        raise DataError(f"{where}: int bounds must be integers, got {bounds!r}")
    low, high = bounds
    log, step = spec.get("log", False), spec.get("step")
    if low > high:
        raise DataError(f"{where}: low {low} is above high {high}")
    if not isinstance(log, bool):
        raise DataError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise DataError(f"{where}: a log distribution needs bounds > 0, got low {low}")
    if step is not None:
        if log:
            raise DataError(f"{where}: step and log cannot be combined")
        if not isinstance(step, numbers.Real) or isinstance(step, bool) or step <= 0:
            raise DataError(f"{where}: step must be a number > 0, got {step!r}")
        if kind == "int" and not isinstance(step, numbers.Integral):
            raise DataError(f"{where}: an int step must be an integer, got {step!r}")
    return Param(name, kind, float(low), float(high), step, log)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and empty mappings are leaves)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


#: config options that say where and how fast a trial runs, not what it learns: they may change
#: between the processes of one study
RUN_ENVIRONMENT_OPTIONS = (
    "trainer.logger",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "data.num_workers",
    "data.featurize_jobs",
    "data.cache_dir",
    "features.n_jobs",
    "tracking_uri",
    "artifact_location",
)


def learning_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` flattened to dotted keys, without :data:`RUN_ENVIRONMENT_OPTIONS`, as a
    study or cross-validation stores it: a resumed one must train on the same data, split and
    schedule."""
    flat = {
        key: value
        for key, value in flatten(config).items()
        if not any(key == o or key.startswith(o + ".") for o in RUN_ENVIRONMENT_OPTIONS)
    }
    return json.loads(json.dumps(flat, default=str))


def describe_differences(before: Any, now: Any) -> str:
    """What changed between two stored values: differing keys of two flat configs, or both."""
    if isinstance(before, dict) and isinstance(now, dict):
        keys = sorted(k for k in {*before, *now} if before.get(k) != now.get(k))
        shown = [f"{k} {json.dumps(before.get(k))} -> {json.dumps(now.get(k))}" for k in keys[:5]]
        return ", ".join(shown) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return f"{json.dumps(before)} -> {json.dumps(now)}"


def check_names(params: Iterable[Param], config: dict[str, Any], open_maps: Iterable[str]) -> None:
    """Refuse a name that is not an option of ``config`` (nor a key directly under one of the
    free-form maps ``open_maps``), naming the closest options."""
    options = flatten(config)
    maps = tuple(open_maps)
    for param in params:
        parent = param.name.rpartition(".")[0]
        if param.name in options or parent in maps:
            continue
        leaf = param.name.rpartition(".")[2]
        close = difflib.get_close_matches(param.name, list(options), n=3, cutoff=0.6)
        close += [key for key in options if key.endswith(f".{leaf}") and key not in close][:3]
        hint = f"closest options: {', '.join(close)}" if close else "see --print_config"
        raise DataError(f"search space: {param.name!r} is not an option of the config; {hint}")


def config_point(config: dict[str, Any], space: Iterable[Param]) -> dict[str, Any]:
    """The config's own value of each searched option, where it lies in the space (on its
    step grid, among its choices): the point a study tries first, so that tuning never ends
    with something worse on validation than the config it started from."""
    options = flatten(config)
    point = {}
    for param in space:
        value = options.get(param.name)
        if param.kind == "categorical":
            inside = value in param.choices
        else:
            inside = (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and param.low <= value <= param.high
                and (not param.step or _on_grid((value - param.low) / param.step))
                and (param.kind == "float" or float(value).is_integer())
            )
        if inside:
            point[param.name] = value
    return point


def _on_grid(steps: float) -> bool:
    return abs(steps - round(steps)) < 1e-9


def with_values(config: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with each dotted name in ``values`` set."""
    out = copy.deepcopy(config)
    for name, value in values.items():
        *parents, leaf = name.split(".")
        node = out
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = value
    return out
