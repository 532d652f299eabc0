"""Profiles (full, demo, ci) are YAML data shipped with the package, so a run is reproducible from its name.

`load_profile` reads a profile once and checks it whole: every key a step reads exists (or has its default
here, in the type), has the right type, and no key is unknown, so a typo fails at load time naming the key
path and the file ("profile mine.yaml has no key split.seed") instead of deep inside a step, or never.
Steps receive the typed `Profile`, never the raw mapping; `Profile.to_dict()` is the resolved profile (file
values plus the defaults below) that `_SUCCESS.json`, the fingerprints and the report record.

Frozen dataclasses with a small validating loader rather than pydantic: pydantic is not a dependency of the
step images (only of the Argo rendering, through Hera), the profile's types are few and flat, and a frozen
dataclass cannot be changed by a step after loading; `replaced()` makes a changed copy where a test or a
benchmark needs one.
"""

from __future__ import annotations

import dataclasses
import math
import types
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

PROFILE_NAMES = ("full", "demo", "ci")
DEFAULT_PROFILE = "demo"  # what a step, `pipeline run` and the Argo workflows use when given none


class ProfileError(ValueError):
    """A profile that cannot be used (unknown name, unreadable or malformed YAML, wrong or unknown keys);
    the CLI exits 2 with it."""


class ProfileKeyError(ProfileError, KeyError):
    """A key the profile must have is missing."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class ImageSize:
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"must be positive, got {self.height}x{self.width}")


@dataclass(frozen=True)
class ModelSettings:
    backbone_width: float  # fraction of VGG16's filters (1.0 = the published architecture)
    top_filters: int  # filters of Block 1 / Block 2
    bn_momentum: float = 0.99  # Keras 2's default, with which Shen's checkpoints were trained
    mixed_precision: bool = False  # float16 on a GPU, bfloat16 on a CPU with bfloat16 units, else float32
    jit_compile: bool = False  # only takes effect when a GPU is present (XLA slowed this project's CPUs down)

    def __post_init__(self) -> None:
        if not 0 < self.backbone_width <= 1 or self.top_filters <= 0:
            raise ValueError("backbone_width must be in (0, 1] and top_filters positive")


@dataclass(frozen=True)
class PhaseSettings:
    """One training phase's section (thesis Table 6; `pretrain`). The shared batch size and patiences apply
    where a section does not set its own: pretraining from scratch sits on a plateau for a number of optimiser
    steps before it learns, where Table 6's patience of 3 would stop it."""

    learning_rate: float
    weight_decay: float
    dropout: float
    epochs: int
    batch_size: int | None = None  # None: training.batch_size (TrainingSettings.phase)
    reduce_lr_patience: int | None = None
    early_stopping_patience: int | None = None


@dataclass(frozen=True, kw_only=True)
class StageSettings(PhaseSettings):
    """A phase's resolved section with the phase's name (`stage1_config2`: stage 1, configuration 2)."""

    phase: str

    @property
    def stage(self) -> str:
        return self.phase.split("_")[0]


@dataclass(frozen=True)
class Augmentation:
    """Thesis Table 7; ranges are symmetric (+-)."""

    rotation_deg: float = 10.0
    width_shift: float = 0.05
    height_shift: float = 0.05
    zoom: float = 0.1
    horizontal_flip: bool = True


@dataclass(frozen=True)
class TrainingSettings:
    batch_size: int
    stage1: PhaseSettings
    stage2: PhaseSettings
    pretrain: PhaseSettings
    reduce_lr_patience: int
    early_stopping_patience: int
    augmentation: Augmentation
    flip_tta: bool
    seed: int = 42  # Python, numpy and Keras are seeded from it (common.training)

    def phase(self, phase: str) -> StageSettings:
        """The settings of a training phase (pretrain, stage1_config1, stage1_config2 or stage2): its section,
        the shared batch size and patiences where the section sets none. Resolved here, not at load time, so a
        changed shared value still reaches every section that does not override it."""
        section: PhaseSettings = getattr(self, phase.split("_")[0])
        own = dataclasses.asdict(section)
        for name in ("batch_size", "reduce_lr_patience", "early_stopping_patience"):
            if own[name] is None:
                own[name] = getattr(self, name)
        return StageSettings(phase=phase, **own)


@dataclass(frozen=True)
class SplitSettings:
    """Patient-level split fractions (in SPLITS order), the age strata edges and the seed of the order."""

    train: float
    validation: float
    test: float
    age_bins: tuple[float, ...]
    seed: int

    def __post_init__(self) -> None:
        if any(f < 0 for f in self.fractions) or not math.isclose(sum(self.fractions), 1.0, abs_tol=1e-9):
            raise ValueError(f"split fractions must be non-negative and sum to 1, got {self.fractions}")
        bins = self.age_bins
        if len(bins) < 2 or any(b <= a for a, b in zip(bins, bins[1:], strict=False)):
            raise ValueError(f"age_bins must be increasing with at least two edges, got {bins}")

    @property
    def fractions(self) -> tuple[float, float, float]:
        return (self.train, self.validation, self.test)


@dataclass(frozen=True)
class MetricsSettings:
    bootstrap: int  # patient-level bootstrap resamples of the AUC's confidence interval
    seed: int


@dataclass(frozen=True)
class RadiomicsSettings:
    target_spacing_mm: float  # the high-resolution copies' pixel spacing
    cv_folds: int
    grid: dict[str, list[Any]]  # PCA + gradient boosting hyperparameters (thesis Table 1)
    search: str = "grid"  # or "halving": successive halving over training patients
    halving_factor: int = 3

    def __post_init__(self) -> None:
        if self.search not in {"grid", "halving"}:
            raise ValueError(f"radiomics.search must be grid or halving, not {self.search!r}")


@dataclass(frozen=True)
class SynthSettings:
    size: ImageSize
    patients: dict[str, int]  # per domain
    size_by_domain: dict[str, ImageSize] = field(default_factory=dict)  # overrides `size` for these domains

    def size_of(self, domain: str) -> ImageSize:
        return self.size_by_domain.get(domain, self.size)


@dataclass(frozen=True)
class RuntimeSettings:
    threads: int = 2  # the 2-core demo machine's count: the same partitioning (and rounding) on any machine


@dataclass(frozen=True)
class Profile:
    image: ImageSize  # the network's input size
    model: ModelSettings
    training: TrainingSettings
    split: SplitSettings
    metrics: MetricsSettings
    radiomics: RadiomicsSettings
    synth: SynthSettings
    name: str = ""
    description: str = ""
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    # How it was asked for (a profile name or a YAML path): not a YAML key, recorded with the values.
    source: str = field(default="", compare=False, metadata={"yaml": False})

    def to_dict(self) -> dict[str, Any]:
        """The resolved profile as plain YAML/JSON values (tuples as lists), without `source`."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata.get("yaml", True)}

    def record(self) -> dict[str, Any]:
        """What `_SUCCESS.json` says about the profile a step ran with (the same for every step)."""
        return {"name": self.source or self.name, "values": self.to_dict()}

    def value(self, key: str) -> Any:
        """A resolved value by dotted key (`synth.patients.film`); a missing key raises ProfileKeyError."""
        value: Any = self.to_dict()
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                raise ProfileKeyError(f"profile {self.source or self.name} has no key {key}")
            value = value[part]
        return value

    def replaced(self, changes: dict[str, Any]) -> Profile:
        """A validated copy with some values changed, by dotted key (tests, benchmarks)."""
        data = self.to_dict()
        for key, new in changes.items():
            *parents, last = key.split(".")
            holder = data
            for part in parents:
                holder = holder[part]
            holder[last] = new
        return profile_from_mapping(data, self.source)


def load_profile(name_or_path: str) -> Profile:
    """The profile by name (full, demo, ci) or from a YAML file, validated."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise ProfileError(f"profile file {name_or_path} does not exist")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise ProfileError(f"profile file {name_or_path} cannot be read: {error}") from None
    elif name_or_path in PROFILE_NAMES:
        text = resources.files("common.profiles").joinpath(f"{name_or_path}.yaml").read_text()
    else:
        raise ProfileError(f"unknown profile {name_or_path!r}: use one of {', '.join(PROFILE_NAMES)} or a YAML file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ProfileError(f"profile {name_or_path} is not valid YAML{where}: {problem}") from None
    return profile_from_mapping(data, name_or_path)


def profile_from_mapping(data: Any, source: str) -> Profile:
    """Check a parsed profile and build its typed form; errors name the key path and the source."""
    if not isinstance(data, dict):
        raise ProfileError(f"profile {source} is not a YAML mapping of sections")
    profile = _build(Profile, data, source, "")
    return dataclasses.replace(profile, source=source)


def _build(cls: type, data: dict[str, Any], source: str, path: str) -> Any:
    hints = get_type_hints(cls)
    known = [f for f in dataclasses.fields(cls) if f.metadata.get("yaml", True)]
    unknown = sorted(set(map(str, data)) - {f.name for f in known})
    if unknown:
        raise ProfileError(f"profile {source} has an unknown key {path}{unknown[0]}")
    values = {}
    for f in known:
        if f.name in data:
            values[f.name] = _convert(hints[f.name], data[f.name], source, f"{path}{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ProfileKeyError(f"profile {source} has no key {path}{f.name}")
    try:
        return cls(**values)
    except ValueError as error:
        raise ProfileError(f"profile {source}: {path.rstrip('.') or 'profile'} {error}") from None


def _convert(hint: Any, value: Any, source: str, key: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):  # `X | None`
        return None if value is None else _convert(next(a for a in args if a is not type(None)), value, source, key)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ProfileError(f"profile {source}: {key} must be a mapping, got {value!r}")
        return _build(hint, value, source, f"{key}.")
    if origin is dict:
        if not isinstance(value, dict):
            raise ProfileError(f"profile {source}: {key} must be a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, source, f"{key}.{k}") for k, v in value.items()}
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ProfileError(f"profile {source}: {key} must be a list, got {value!r}")
        converted = [_convert(args[0], item, source, key) for item in value]
        return tuple(converted) if origin is tuple else converted
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ProfileError(f"profile {source}: {key} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text
            try:
                value = float(value)
            except ValueError:
                pass
        number_ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not number_ok or (hint is int and not float(value).is_integer()):
            raise ProfileError(f"profile {source}: {key} must be {'an integer' if hint is int else 'a number'}, "
                               f"got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ProfileError(f"profile {source}: {key} must be text, got {value!r}")
        return value
    raise TypeError(f"profile type {hint!r} of {key} is not handled")  # a programming error, not a bad profile


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
