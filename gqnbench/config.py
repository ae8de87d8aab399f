"""Everything a run can be configured with: the model, data and training configs, and their overrides.

:class:`ModelConfig` (every size knob of both models), :class:`DataConfig` (where scenes come from
and how episodes are drawn) and :class:`TrainConfig` (optimiser, schedules, evaluation cadence,
precision and fast path); the presets (``gqnbench.presets``) combine them. Overrides apply
``section.field=value`` strings with type coercion and range checks.

Overrides come from the command line (``--set model.z_channels=32``) or from Python
(``{"model.z_channels": 32}``); both go through :func:`replace_fields`, so a typo in a
field name is an error that lists the valid fields instead of a silent no-op.

Every numeric field of a config dataclass declares its allowed values once, with
:func:`ranged` (``eval_every: int = ranged(1000, lo=1)``); the dataclass checks them in
``__post_init__`` (:func:`check_ranges`), and an override out of range is refused naming
the field, the value as given and the range: ``train.eval_every=0: must be >= 1``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """An override names an unknown field or carries a value of the wrong type or out of range."""


def _num(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Range:
    """The values a numeric config field allows: bounds (open or closed), finiteness, a step.

    ``None`` always passes (an optional field that is off); a value of another type is left to
    the type check.
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    finite: bool = True
    multiple_of: int | None = None

    def __str__(self) -> str:
        if self.lo is not None and self.lo == self.hi:
            return f"must be {_num(self.lo)}"
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {_num(self.lo)}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {_num(self.hi)}")
        if self.multiple_of:
            parts.append(f"a multiple of {self.multiple_of}")
        return "must be " + (" and ".join(parts) if parts else "a finite number")

    def allows(self, value: Any) -> bool:
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return True
        if math.isnan(value) or (self.finite and math.isinf(value)):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return not (self.multiple_of and value % self.multiple_of)


def ranged(default: Any, lo: float | None = None, hi: float | None = None, **rule: Any) -> Any:
    """A dataclass field with ``default`` whose values must lie in :class:`Range` ``(lo, hi, **rule)``."""
    return dataclasses.field(default=default, metadata={"range": Range(lo, hi, **rule)})


def range_problem(cls: type, name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for field ``name`` of dataclass ``cls`` (``"must be >= 1"``), or None."""
    rule = next((f.metadata.get("range") for f in dataclasses.fields(cls) if f.name == name), None)
    return None if rule is None or rule.allows(value) else str(rule)


def check_ranges(obj: Any) -> None:
    """Raise :class:`ConfigError` for the first field of dataclass ``obj`` outside its declared range."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if (problem := range_problem(type(obj), f.name, value)) is not None:
            raise ConfigError(f"{f.name}={value!r}: {problem}")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    if not isinstance(value, str):
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and type(None) in args):
        if value.lower() in ("none", "null"):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where) if inner else value
    try:
        if annotation in (bool, "bool"):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation in (int, "int"):
            return int(float(value)) if "e" in value.lower() else int(value)
        if annotation in (float, "float"):
            return float(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: cannot read {value!r} as {annotation}") from exc
    return value


def replace_fields(obj: Any, overrides: Mapping[str, Any], where: str = "") -> Any:
    """Return a copy of dataclass ``obj`` with ``overrides`` (plain field names) applied and checked.

    ``where`` (``"train."``) prefixes the field names in errors, which quote the value as given.
    """
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"unknown field {where}{key!r}; valid fields: {valid}")
        changes[key] = _coerce(value, hints.get(key, Any), f"{where}{key}")
        if (problem := range_problem(type(obj), key, changes[key])) is not None:
            raise ConfigError(f"{where}{key}={value}: {problem}")
    try:
        return dataclasses.replace(obj, **changes)
    except ValueError as exc:  # a rule across fields (__post_init__): name the section too
        raise ConfigError(f"{where}{exc}") from None


def parse_override_strings(items: Iterable[str]) -> dict[str, str]:
    """Turn ``["model.z_channels=32", ...]`` into ``{"model.z_channels": "32", ...}``."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) dataclass."""
    return dataclasses.asdict(obj)


# DeepMind's Shepard-Metzler scenes: 15 views of 64x64 frames each (the data package's layout).
NUM_VIEWS = 15
FRAME_SIZE = 64


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of a GQN-family model. Defaults are the study's paper configuration for ``gqn``.

    ``image_size`` must be divisible by 4: the representation and the cores work at
    image_size / 4 (16x16 at 64x64), and the canvas is upsampled back by a 4/4 transposed conv.
    """

    image_size: int = ranged(64, lo=8, multiple_of=4)
    hidden_channels: int = ranged(128, lo=1)  # ConvLSTM hidden state
    r_channels: int = ranged(256, lo=1)  # scene representation r
    z_channels: int = ranged(3, lo=1)  # latent channels per step
    num_layers: int = ranged(12, lo=1)  # L, generation steps
    representation: str = "pool"  # "pool" (r is C x 1 x 1) or "tower" (r is C x H/4 x W/4)
    shared_core: bool = True  # one set of core weights reused at all L steps
    viewpoint_dim: int = ranged(7, lo=7, hi=7)  # (x, y, z, cos/sin yaw, cos/sin pitch): what the data gives
    # GQN pixel standard deviation, annealed linearly (SPEC section 4); metagqn uses sigma_end = sigma_start = 1.
    sigma_start: float = ranged(2.0, lo=0, lo_open=True)
    sigma_end: float = ranged(0.7, lo=0, lo_open=True)
    sigma_anneal_steps: int = ranged(200_000, lo=0)
    # metagqn only: keep the authors' prior head eta_pi that the objective never uses
    # (the study's 18,713,091 parameters count it).
    include_unused_prior_head: bool = False
    # Regroup the cores' linear operations (gqnbench.models.folding): step-invariant inputs
    # through the gate conv once per forward, the canvas kept at core size with one shared
    # core. Same parameters and function, ~45% fewer FLOPs at the paper size. False computes
    # everything at every step as the authors' code does (their FLOPs, SPEC section 7).
    fold_linear_ops: bool = True
    # How eta_g's output becomes the predicted mean. "raw" (the authors' torch-gqn / torch-jump
    # code): the likelihood is trained on the raw head output, clamped to [0, 1] only when
    # predicting; a zero canvas predicts black, the background. "sigmoid": squashed in training
    # too (another public GQN); a zero canvas predicts grey 0.5.
    output_head: str = "raw"
    # Initial bias of the log-variance half of the latent heads (eta_e, and eta_pi for GQN).
    # None keeps PyTorch's default init (logvar about 0: z carries unit-variance noise at the start).
    latent_logvar_bias: float | None = ranged(None)

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.output_head not in ("raw", "sigmoid"):
            raise ConfigError(f"output_head={self.output_head!r}: must be 'raw' or 'sigmoid'")
        if self.representation not in ("pool", "tower"):
            raise ConfigError(f"representation={self.representation!r}: must be 'pool' or 'tower'")

    @property
    def canvas_at_core_size(self) -> bool:
        """Whether the canvas is summed at the core's resolution and upsampled once at the end.

        Only with one shared core: ``sum_l up(h_l) = up(sum_l h_l)`` needs the same ``up``.
        """
        return self.fold_linear_ops and self.shared_core

    @property
    def core_size(self) -> int:
        """Spatial size of the ConvLSTM states (16 at 64x64)."""
        return self.image_size // 4


def linear_anneal(step: int, start: float, end: float, steps: int) -> float:
    """Linear from ``start`` at step 0 to ``end`` at ``steps``, constant after (SPEC section 4)."""
    if steps <= 0:
        return end
    frac = min(max(step, 0) / steps, 1.0)
    return start + (end - start) * frac


# A context of at most every view but one: one view of each scene is the query.
MAX_CONTEXT = NUM_VIEWS - 1


@dataclass(frozen=True)
class DataConfig:
    root: str | None = None  # a DeepMind-format root; None = the embedded generated set
    dataset: str = "shepard_metzler_7_parts"
    # Frames are resized to this in the decoded cache (the cache only shrinks the 64x64 frames).
    image_size: int = ranged(64, lo=1, hi=FRAME_SIZE)
    generate_scenes: int = ranged(1200, lo=2)  # size of the embedded set when root is None (>= 1 train + 1 test)
    generate_seed: int = ranged(0, lo=0)
    val_fraction: float = ranged(0.1, lo=0, hi=1, lo_open=True, hi_open=True)  # 9:1 train/test split of the generated set
    scenes_per_file: int = ranged(100, lo=1)  # scenes per generated TFRecord shard (DeepMind's files hold about 900)
    cache_dir: str | None = None  # decoded-frame cache; None = <root>/.gqnbench-cache (or ~/.cache if read-only)
    min_context: int = ranged(1, lo=1, hi=MAX_CONTEXT)
    max_context: int = ranged(MAX_CONTEXT, lo=1, hi=MAX_CONTEXT)  # M ~ U{min..max}
    val_scenes: int = ranged(64, lo=1)  # fixed validation episodes (3 context views, 1 query)
    val_context: int = ranged(3, lo=1, hi=MAX_CONTEXT)
    val_seed: int = ranged(1234, lo=0)
    num_workers: int = ranged(0, lo=0)

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.max_context < self.min_context:
            raise ConfigError(f"max_context={self.max_context}: must be >= min_context ({self.min_context})")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = ranged(36, lo=1)
    steps: int = ranged(35_000, lo=1)  # an untrained model is not a run
    lr_start: float = ranged(5e-4, lo=0, lo_open=True)
    lr_end: float = ranged(5e-5, lo=0)
    lr_anneal_steps: int = ranged(1_600_000, lo=0)
    adam_beta1: float = ranged(0.9, lo=0, hi=1, hi_open=True)
    adam_beta2: float = ranged(0.999, lo=0, hi=1, hi_open=True)
    adam_eps: float = ranged(1e-8, lo=0, lo_open=True)
    grad_clip: float | None = ranged(None, lo=0, lo_open=True)  # off, as in the paper
    eval_every: int = ranged(1000, lo=1)
    checkpoint_every: int = ranged(1000, lo=1)
    seed: int = ranged(0, lo=0)
    # off (= fp32) | bf16 | fp16 (fp16 only on CUDA, with a grad scaler) | auto: fp32 or bf16, whichever
    # this host runs faster and passes the numerics check (gqnbench.precision)
    amp: str = "off"
    compile: bool = False
    # The step's fast path (gqnbench.step.FastPath): "auto" is every switch on CUDA and none on the
    # CPU; "off"; or switch names such as "auto,-cuda_graph" or "channels_last,fused_cell".
    fast_path: str = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = ranged(None, lo=1)  # torch.set_num_threads; None leaves the default
    # A validation NLL above this marks the run diverged (inf: only a non-finite NLL does).
    nll_blowup: float = ranged(1e7, lo=0, lo_open=True, finite=False)
    log_every: int = ranged(10, lo=1)  # a train_curve point every this many steps (every step's loss is still NaN-checked)
    eval_batch_size: int = ranged(64, lo=1)  # validation scenes per forward; fixed so the eval noise does not depend on it
    eval_use_mean: bool = False  # False: sample z (prior for gqn, q(z|D) for metagqn), as the study does
    tensorboard: bool = True  # TensorBoard scalars next to the results file
    inject_nan_at_step: int | None = ranged(None, lo=0)  # fault injection for tests: the loss at this step becomes NaN
    flush_denormal: bool = True  # CPU flush-to-zero: denormals from saturated gates made fp32 steps 2-5x slower
    # amp=auto already resolved (the main job measures once for all its runs): the PrecisionChoice as JSON.
    amp_choice: str | None = None

    def __post_init__(self) -> None:
        check_ranges(self)
