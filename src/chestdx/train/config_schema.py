"""The typed run configuration: one pydantic model per section, the single home of every default.

Strict: unknown keys and wrong types are errors (:mod:`chestdx.train.config` turns them into one
:class:`ConfigError` naming the full key path and the nearest valid name). ``model.arch`` and ``model.freeze``
are checked against the model registry at validation time, so newly registered architectures are accepted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from chestdx.policies import parse_policy, policy_key

__all__ = ["AugmentSection", "CalibrationSection", "ChestConfig", "EarlyStoppingSection", "LossSection",
           "ModelSection", "OptimizerSection", "SchedulerSection", "SplitSection", "parse_policy"]


def _to_float(value: Any) -> Any:
    """YAML 1.1 reads ``3e-4`` as a string: accept numeric strings for float fields, never booleans."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _to_str(value: Any) -> Any:
    """A number where a name is expected (``name: 2024``) is taken as its text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


Float = Annotated[float, BeforeValidator(_to_float)]
Str = Annotated[str, BeforeValidator(_to_str)]


class Section(BaseModel):
    """Base of every section: unknown keys and wrong types are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class SplitSection(Section):
    """Patient-grouped split (``make_split``)."""

    seed: int = 0
    val: Float = Field(0.1, ge=0.0, lt=1.0)
    test: Float = Field(0.2, ge=0.0, lt=1.0)
    official: bool = False
    boxes_to_test: Str | None = None  # NIH BBox CSV: the patients of boxed images go to test


class ModelSection(Section):
    """Architecture (a registry name), pretrained weights, freeze point, metadata fusion."""

    arch: Str = "efficientnet_lite0"
    pretrained: Str | None = "imagenet"  # "imagenet", a weights file, or null (random init)
    freeze: Str = "none"
    metadata: list[Literal["age", "sex", "view"]] = Field(default_factory=list)

    @field_validator("arch", mode="before")
    @classmethod
    def _known_arch(cls, value: Any) -> Any:
        from chestdx.models.registry import available_models

        value = _lower(value)
        names = available_models()
        if isinstance(value, str) and value not in names:
            raise ValueError(f"unknown architecture {value!r}{_did_you_mean(value, names)}; "
                             f"registered: {', '.join(names)}")
        return value

    @field_validator("freeze", mode="before")
    @classmethod
    def _known_freeze(cls, value: Any, info: ValidationInfo) -> Any:
        from chestdx.models.registry import freeze_points

        arch = info.data.get("arch")
        if arch is None or not isinstance(value, str):  # arch already refused / the type check reports it
            return value
        points = freeze_points(arch)
        point = value.strip().lower()
        if point not in points:
            raise ValueError(f"{value!r} is not a freeze point of {arch}{_did_you_mean(point, points)}; "
                             f"choose from {', '.join(points)}")
        return point


class AugmentSection(Section):
    """Train-only augmentation (``chestdx.data.dataset.AugmentConfig``): affine jitter, and intensity changes
    (gamma, contrast, noise, blur; each off at 0) applied with probability ``intensity_prob``."""

    shift: Float = Field(0.05, ge=0.0, le=0.5)
    rotate_deg: Float = Field(5.0, ge=0.0, le=180.0)
    shear: Float = Field(0.05, ge=0.0, le=1.0)
    zoom: Float = Field(0.15, ge=0.0, lt=1.0)
    gamma: Float = Field(0.0, ge=0.0, le=3.0)
    contrast: Float = Field(0.0, ge=0.0, lt=1.0)
    noise_std: Float = Field(0.0, ge=0.0, le=0.5)
    blur_sigma: Float = Field(0.0, ge=0.0, le=5.0)
    intensity_prob: Float = Field(0.5, ge=0.0, le=1.0)


class LossSection(Section):
    """``weighted_bce`` | ``bce`` | ``focal`` (+ ``gamma``, ``alpha``). A plain string is the name alone."""

    name: Literal["weighted_bce", "bce", "focal"] = "weighted_bce"
    gamma: Float | None = Field(None, ge=0.0)  # focal only (default 2.0)
    alpha: Float | list[Float] | None = None  # focal only: weight of positives (per label with a list)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value.strip().lower()}
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            return {**value, "name": value["name"].strip().lower()}
        return value

    @model_validator(mode="after")
    def _params_need_focal(self) -> LossSection:
        if self.name != "focal":
            given = [k for k in ("gamma", "alpha") if getattr(self, k) is not None]
            if given:
                raise ValueError(f"{' and '.join(given)}: parameters of the focal loss only, not of {self.name!r}")
        alphas = self.alpha if isinstance(self.alpha, list) else [self.alpha] if self.alpha is not None else []
        if any(not 0.0 <= a <= 1.0 for a in alphas):
            raise ValueError("alpha must lie in [0, 1]")
        return self

    @model_serializer(mode="plain")
    def _compact(self) -> str | dict[str, Any]:
        """The name alone when no parameter is set (``loss: weighted_bce``), else the mapping."""
        params = {k: getattr(self, k) for k in ("gamma", "alpha") if getattr(self, k) is not None}
        return {"name": self.name, **params} if params else self.name


class OptimizerSection(Section):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: Float = Field(1e-3, gt=0.0)
    weight_decay: Float = Field(0.0, ge=0.0)

    @field_validator("name", mode="before")
    @classmethod
    def _lower_name(cls, value: Any) -> Any:
        return _lower(value)


class SchedulerSection(Section):
    """``plateau`` (on validation macro AUROC: ``factor``, ``patience``), ``cosine`` over the epochs, ``none``."""

    name: Literal["none", "cosine", "plateau"] = "plateau"
    factor: Float = Field(0.5, gt=0.0, lt=1.0)
    patience: int = Field(1, ge=0)

    @field_validator("name", mode="before")
    @classmethod
    def _none_name(cls, value: Any) -> Any:
        return "none" if value is None else _lower(value)


class EarlyStoppingSection(Section):
    """Stop when validation macro AUROC (over labels with >= ``min_val_positives`` positives) stops rising."""

    patience: int = Field(2, ge=0)
    min_delta: Float = Field(0.0, ge=0.0)
    min_val_positives: int = Field(1, ge=1)


class CalibrationSection(Section):
    """Operating point used to call findings, and the fewest out-of-fold positives for a label to be callable."""

    policy: Str = "auto"  # or balanced, f1, sensitivity:<t>, specificity:<t> (chestdx.policies)
    min_positives: int = Field(10, ge=1)

    @field_validator("policy")
    @classmethod
    def _valid_policy(cls, value: str) -> str:
        return policy_key(value)


Precision = Literal["auto", "64", "64-true", "32", "32-true", "16", "16-mixed", "16-true", "bf16", "bf16-mixed",
                    "bf16-true", "transformer-engine", "transformer-engine-float16"]


class ChestConfig(Section):
    """The whole run configuration (``load_config`` returns ``ChestConfig(...).model_dump()``)."""

    name: Str = "run"
    data: Str | None = None  # dataset folder / CSV, or "phantom" for the built-in synthetic set
    dataset_kind: Literal["auto", "nih", "folders", "csv"] = "auto"
    split: SplitSection = Field(default_factory=SplitSection)
    labels: Literal["auto"] | list[Str] = "auto"  # "auto": labels with >= min_positives positives in train
    min_positives: int = Field(1, ge=1)
    model: ModelSection = Field(default_factory=ModelSection)
    image_size: int = Field(224, ge=16, le=4096)
    augment: AugmentSection = Field(default_factory=AugmentSection)
    loss: LossSection = Field(default_factory=LossSection)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    batch_size: int = Field(16, ge=1)
    accumulate: int = Field(1, ge=1)
    epochs: int = Field(10, ge=1)
    early_stopping: EarlyStoppingSection = Field(default_factory=EarlyStoppingSection)
    folds: int = Field(1, ge=1)  # K > 1: K-fold cross-validated ensemble (one member per fold)
    calibration: CalibrationSection = Field(default_factory=CalibrationSection)
    precision: Precision = "auto"  # 16-mixed / bf16-mixed on GPU, 32-true on CPU
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    accelerator: Str = "auto"
    devices: int | Str | list[int] = 1  # 1, 2, "auto", -1, [0, 1]
    strategy: Str = "auto"
    num_nodes: int = Field(1, ge=1)
    cache_root: Str | None = None
    limit_train_batches: int | Float | None = None
    threads: int | None = Field(None, ge=1)  # torch CPU threads (None = torch default)
    channels_last: bool = False  # NHWC memory format for convolutions (faster with AMP on recent GPUs)
    progress: bool = True
    labels_resolved: list[Str] | None = None  # written by training: the labels actually trained

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("labels")
    @classmethod
    def _labels_not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("labels: give 'auto' or a non-empty list")
        return value


def _did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
