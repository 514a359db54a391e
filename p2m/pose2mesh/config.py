"""Pose2Mesh configuration: frozen dataclasses loaded from YAML, unknown keys rejected by their dotted path."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from p2m.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")

ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "tanh")
COORD_LOSS_FORMS = ("l1", "l2", "smooth_l1")
#: Validation metrics that can decide the best checkpoint (see p2m.pose2mesh.evaluate).
STANDARDIZE = ("per_axis", "one_scale")
BEST_METRICS = ("mpjpe", "pa_mpjpe", "mpjpe_17", "pa_mpjpe_17", "mpvpe", "lifted_mpjpe")


def _choice(value: Any, allowed: Sequence[Any], name: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {list(allowed)}{_did_you_mean(value, allowed)}")


def _did_you_mean(value: Any, allowed: Sequence[Any]) -> str:
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _positive(value: float, name: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(
            f"{name}: {value!r}, expected a {'non-negative' if allow_zero else 'positive'} number"
        )


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BodyConfig:
    """Which body model and mesh the network predicts (see p2m.body)."""

    model: str = "anny"
    topology: str = "notoes"
    rig: str = "cmu_mb"


@dataclass(frozen=True)
class PoseNetConfig:
    """The lifting MLP (Martinez et al.): ``Linear(2J, hidden)``, ``num_blocks`` residual blocks, ``Linear(hidden, 3J)``."""

    hidden: int = 4096
    num_blocks: int = 2
    dropout: float = 0.5
    activation: str = "relu"

    def __post_init__(self) -> None:
        _positive(self.hidden, "hidden")
        _positive(self.num_blocks, "num_blocks", allow_zero=True)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: {self.dropout!r}, expected 0 <= p < 1")
        _choice(self.activation, ACTIVATIONS, "activation")


@dataclass(frozen=True)
class MeshNetConfig:
    """The graph CNN: joint-graph convs -> FC onto the coarsest mesh level -> residual blocks, coarse to fine.

    ``level_channels[i]`` lists the output widths of the Chebyshev convs of the block on mesh level ``i``, counted
    from the coarsest; the mesh is coarsened ``len(level_channels) - 1`` times by heavy-edge matching
    (:mod:`p2m.pose2mesh.graph`). ``head_channels`` are the widths of the convs on the finest level before the last
    one, which outputs 3 coordinates.
    """

    joint_channels: tuple[int, ...] = (32, 64, 64)
    level_channels: tuple[tuple[int, ...], ...] = (
        (128, 256),
        (256, 256),
        (256, 256),
        (256, 256),
        (256, 256),
        (128, 128),
        (128, 128),
        (128, 128),
    )
    head_channels: tuple[int, ...] = (64,)
    cheb_k: int = 3
    activation: str = "relu"
    #: "batch": BatchNorm over batch x vertices after every conv but the last (the original); "none".
    norm: str = "batch"
    #: "interpolate": linear resampling of the channel axis, parameter-free (the original); "linear": a learned
    #: bias-free projection; "none": no residual connection.
    residual: str = "interpolate"
    #: "chebnet": 2 L / lmax - I, spectrum in [-1, 1]; "pose2mesh": the original's L / (2 lmax) - I, in [-1, -0.5].
    laplacian_scaling: str = "chebnet"
    #: Feed PoseNet's 3D joints to MeshNet detached (the original): MeshNet losses do not train PoseNet.
    detach_lifted: bool = True

    def __post_init__(self) -> None:
        if not self.joint_channels or not self.level_channels:
            raise ConfigError("joint_channels and level_channels must not be empty")
        for name, widths in (("joint_channels", self.joint_channels), ("head_channels", self.head_channels)):
            for w in widths:
                _positive(w, name)
        for i, block in enumerate(self.level_channels):
            if not block:
                raise ConfigError(f"level_channels[{i}]: empty block, expected at least one width")
            for w in block:
                _positive(w, f"level_channels[{i}]")
        if self.cheb_k < 1:
            raise ConfigError(f"cheb_k: {self.cheb_k!r}, expected >= 1")
        _choice(self.activation, ACTIVATIONS, "activation")
        _choice(self.norm, ("batch", "none"), "norm")
        _choice(self.residual, ("interpolate", "linear", "none"), "residual")
        _choice(self.laplacian_scaling, ("chebnet", "pose2mesh"), "laplacian_scaling")

    @property
    def num_levels(self) -> int:
        """Number of mesh levels the network uses (the finest included)."""
        return len(self.level_channels)


@dataclass(frozen=True)
class ModelConfig:
    """PoseNet + MeshNet. ``stage: posenet`` builds the lifter alone (the original's first training stage)."""

    stage: str = "pose2mesh"
    #: Input joint set: "h36m" (17, root Pelvis) or "coco19" (COCO-17 + Pelvis + Neck, root Pelvis = 17).
    joint_set: str = "h36m"
    body: BodyConfig = field(default_factory=BodyConfig)
    posenet: PoseNetConfig = field(default_factory=PoseNetConfig)
    meshnet: MeshNetConfig = field(default_factory=MeshNetConfig)

    def __post_init__(self) -> None:
        _choice(self.stage, ("posenet", "pose2mesh"), "stage")
        _choice(self.joint_set, ("h36m", "coco19"), "joint_set")


# ----------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossConfig:
    """Weights and forms of the Pose2Mesh losses; the defaults are the original's stage-2 values.

    Each weight multiplies the loss in the unit the original used: vertex and edge in metres, joint and lift in
    millimetres (so their 1e-3 weights express them in metres), normal unitless. A weight of 0 skips the term.
    """

    vertex: float = 1.0
    normal: float = 0.1
    edge: float = 20.0
    joint: float = 1e-3
    lift: float = 1e-3
    #: Form of the coordinate losses (vertex, joint, lift): "l1" (the original), "l2" (Euclidean) or "smooth_l1".
    form: str = "l1"
    #: 0-based epoch from which the edge loss is added. The original's ``epoch > 7`` with 1-based epochs is 7 here.
    edge_start_epoch: int = 7
    #: Epochs over which the edge loss (from ``edge_start_epoch``) and the normal loss (from epoch 0) grow linearly
    #: from 0 to their full weight, counted in fractions of an epoch; 0 (the original) switches them on at once.
    ramp_epochs: float = 0.0
    #: Per-term forms of the coordinate losses (added by the trainer); None: ``form``.
    vertex_form: str | None = None
    joint_form: str | None = None
    lift_form: str | None = None

    def __post_init__(self) -> None:
        for name in ("vertex", "normal", "edge", "joint", "lift"):
            _positive(getattr(self, name), name, allow_zero=True)
        _choice(self.form, COORD_LOSS_FORMS, "form")
        for name in ("vertex_form", "joint_form", "lift_form"):
            if getattr(self, name) is not None:
                _choice(getattr(self, name), COORD_LOSS_FORMS, name)
        if self.edge_start_epoch < 0:
            raise ConfigError(f"edge_start_epoch: {self.edge_start_epoch!r}, expected >= 0")
        _positive(self.ramp_epochs, "ramp_epochs", allow_zero=True)

    def form_of(self, term: str) -> str:
        """The form of coordinate loss ``term`` ("vertex", "joint" or "lift"): its own, else ``form``."""
        return getattr(self, f"{term}_form") or self.form


# ----------------------------------------------------------------------------------------------------------------
# Input transform (normalisation, synthetic 2D errors, flip)
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseConfig:
    """The synthetic 2D error model applied to training inputs (see :mod:`p2m.pose2mesh.transforms`).

    ``kind``: "none", "gaussian" (per-joint offsets, the original's Human3.6M model) or "posefix" (per-joint
    jitter / miss / inversion, the original's COCO model).
    """

    kind: str = "gaussian"
    #: gaussian: per-joint std = gaussian_scale * OKS sigma of the joint * crop height (px).
    gaussian_scale: float = 0.25
    #: gaussian: probability that a joint is perturbed at all (the original drew 0.90-1.00 per joint).
    gaussian_prob: float = 0.95
    #: posefix: probabilities of (jitter, miss, inversion) for the joint groups, with > ``few_valid`` valid joints.
    posefix_head: tuple[float, float, float] = (0.10, 0.02, 0.01)
    posefix_torso: tuple[float, float, float] = (0.10, 0.03, 0.02)
    posefix_middle: tuple[float, float, float] = (0.15, 0.05, 0.03)
    posefix_end: tuple[float, float, float] = (0.20, 0.10, 0.06)
    #: posefix: with at most this many valid joints, the probabilities above are multiplied by ``few_valid_scale``.
    few_valid: int = 10
    few_valid_scale: float = 1.5

    def __post_init__(self) -> None:
        _choice(self.kind, ("none", "gaussian", "posefix"), "kind")
        _positive(self.gaussian_scale, "gaussian_scale", allow_zero=True)
        if not 0.0 <= self.gaussian_prob <= 1.0:
            raise ConfigError(f"gaussian_prob: {self.gaussian_prob!r}, expected a probability")
        for name in ("posefix_head", "posefix_torso", "posefix_middle", "posefix_end"):
            probs = getattr(self, name)
            if any(p < 0 for p in probs) or sum(probs) * self.few_valid_scale > 1.0:
                raise ConfigError(
                    f"{name}: {list(probs)}, expected probabilities whose sum x few_valid_scale <= 1"
                )
        _positive(self.few_valid_scale, "few_valid_scale")


@dataclass(frozen=True)
class TransformConfig:
    """Input normalisation (the original's 288 x 384 crop) and train-time augmentation."""

    crop_width: int = 288
    crop_height: int = 384
    #: Probability of a horizontal flip at train time (the original: 0.5 for PoseNet, off for stage 2).
    flip_prob: float = 0.0
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    #: "per_axis": x and y standardised separately (the original; it discards the body's proportions);
    #: "one_scale": one scale for both axes, the crop's pixels centred and divided by their RMS spread per axis.
    standardize: str = "per_axis"

    def __post_init__(self) -> None:
        _positive(self.crop_width, "crop_width")
        _positive(self.crop_height, "crop_height")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ConfigError(f"flip_prob: {self.flip_prob!r}, expected a probability")
        _choice(self.standardize, STANDARDIZE, "standardize")


# ----------------------------------------------------------------------------------------------------------------
# Training (the trainer extends this section)
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the defaults are the original's stage-2 YAMLs (RMSprop, bs 64, 15 epochs)."""

    optimizer: str = "rmsprop"
    lr: float = 1e-3
    batch_size: int = 64
    epochs: int = 15
    #: MultiStepLR milestones, stepped once per epoch: the rate is multiplied by ``lr_factor`` once that many
    #: epochs have completed (``[12]``: from 0-based epoch 12 on, as the original's ``lr_step [12]``).
    lr_steps: tuple[int, ...] = (12,)
    lr_factor: float = 0.1
    seed: int = 123
    # -- added by the trainer (p2m/pose2mesh/train.py); every default keeps the original's behaviour --------------
    #: Learning-rate schedule, stepped once per epoch: "multistep" (the original: x ``lr_factor`` at each epoch of
    #: ``lr_steps``), "cosine" (cosine annealing from ``lr`` to 0 over ``epochs``) or "constant".
    scheduler: str = "multistep"
    #: Decoupled (adamw) or L2 (the others) weight decay; the original used none.
    weight_decay: float = 0.0
    #: Momentum of "sgd" (unused by the others).
    momentum: float = 0.9
    #: Micro-batches per optimizer step. ``batch_size`` is the effective batch over all ranks and micro-batches:
    #: each rank loads ``batch_size / (world_size * accum_steps)`` samples at a time, so a GPU too small for the
    #: configured batch keeps the same effective batch (BatchNorm then sees the smaller micro-batch).
    accum_steps: int = 1
    #: Clip the gradient norm to this value (0: no clipping, the original).
    grad_clip: float = 0.0
    #: Mixed precision: "auto" (bf16 autocast on CUDA, off elsewhere), "bf16", "fp16" (with a GradScaler) or "off".
    amp: str = "auto"
    #: Wrap the model with torch.compile.
    compile: bool = False
    #: DataLoader worker processes per rank (0: read shards in the training process).
    num_workers: int = 2
    #: Samples in the shard reader's shuffle buffer (per worker).
    shuffle_buffer: int = 2000
    #: Batches per rank per epoch with resampled shards (with replacement); None: exact epochs over the split,
    #: which also makes ``--resume`` replay the data exactly.
    epoch_length: int | None = None
    #: The shard folder (or index.json, or URL) of the run; `p2m train --data` records it, so --resume needs none.
    data: str | None = None
    #: Shard splits to train and validate on (``val_split: null`` or a split the shards lack: no validation).
    train_split: str = "train"
    val_split: str | None = "test"
    #: Validate every this many epochs (and after the last one).
    val_every: int = 1
    val_batch_size: int = 256
    #: Validate on at most this many samples (None: the whole split).
    val_max_samples: int | None = None
    #: Validation 2D input: "noisy" (the synthetic error model, seeded per sample as `p2m eval --seed 0`) or "gt".
    val_input: str = "noisy"
    #: Validation metric that decides ``best.pt`` (lower is better): "mpjpe", "pa_mpjpe", "mpvpe", ...
    best_metric: str = "mpjpe"
    #: Write a metrics.jsonl row and update the progress every this many optimizer steps.
    log_every: int = 20
    #: Write ``checkpoints/last.pt`` every this many optimizer steps (0: only at the end of each epoch).
    ckpt_every_steps: int = 500

    def __post_init__(self) -> None:
        _choice(self.optimizer, ("rmsprop", "adam", "adamw", "sgd"), "optimizer")
        _positive(self.lr, "lr")
        _positive(self.batch_size, "batch_size")
        _positive(self.epochs, "epochs")
        _positive(self.lr_factor, "lr_factor")
        _choice(self.scheduler, ("multistep", "cosine", "constant"), "scheduler")
        _positive(self.weight_decay, "weight_decay", allow_zero=True)
        _positive(self.momentum, "momentum", allow_zero=True)
        _positive(self.accum_steps, "accum_steps")
        _positive(self.grad_clip, "grad_clip", allow_zero=True)
        _choice(self.amp, ("auto", "bf16", "fp16", "off"), "amp")
        _positive(self.num_workers, "num_workers", allow_zero=True)
        _positive(self.shuffle_buffer, "shuffle_buffer", allow_zero=True)
        if self.epoch_length is not None:
            _positive(self.epoch_length, "epoch_length")
        _positive(self.val_every, "val_every")
        _positive(self.val_batch_size, "val_batch_size")
        if self.val_max_samples is not None:
            _positive(self.val_max_samples, "val_max_samples")
        _choice(self.val_input, ("noisy", "gt"), "val_input")
        _choice(self.best_metric, BEST_METRICS, "best_metric")
        _positive(self.log_every, "log_every")
        _positive(self.ckpt_every_steps, "ckpt_every_steps", allow_zero=True)
        if self.batch_size % self.accum_steps:
            raise ConfigError(
                f"batch_size {self.batch_size} is not divisible by accum_steps {self.accum_steps}"
            )


@dataclass(frozen=True)
class SyntheticConfig:
    """Training batches drawn on the training device (:mod:`p2m.pose2mesh.synthetic`) instead of, or mixed with,
    the shards' training split."""

    #: Share of every training batch drawn by the synthetic source: 0 = shards only (the default), 1 = no training
    #: shards needed (``--data`` then only serves validation).
    ratio: float = 0.0
    #: Batches per epoch when every batch is synthetic (with shards, the shards' epoch decides).
    batches_per_epoch: int = 1000
    #: Pose bank: "cmu-train" (never the held-out evaluation subjects) or a pose table / BVH folder.
    poses: str = "cmu-train"
    #: Probability that a pose is mirrored left/right.
    mirror_prob: float = 0.5
    #: Share of random cameras around the person; the others come from the Human3.6M-like rig.
    random_camera_prob: float = 0.5
    #: Side (px) of the random cameras' square images.
    image_size: int = 512

    def __post_init__(self) -> None:
        for name in ("ratio", "mirror_prob", "random_camera_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}: {getattr(self, name)!r}, expected a number in [0, 1]")
        _positive(self.batches_per_epoch, "batches_per_epoch")
        _positive(self.image_size, "image_size")


@dataclass(frozen=True)
class Config:
    """Everything a Pose2Mesh run needs; saved resolved as ``RUN/config.yaml``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


# ----------------------------------------------------------------------------------------------------------------
# Loading, overriding, saving
# ----------------------------------------------------------------------------------------------------------------
def from_dict(cls: type[T], data: Mapping[str, Any] | None, path: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping; missing keys take their defaults.

    Args:
        cls: a (frozen) dataclass type whose fields are dataclasses, scalars, tuples or ``X | None``.
        data: the mapping (e.g. parsed YAML); ``None`` means all defaults.
        path: dotted prefix used in error messages.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or a value the dataclass rejects, naming the
            dotted path (``model.meshnet.cheb_k``).
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = ", ".join(_join(path, str(k)) for k in unknown)
        close = difflib.get_close_matches(str(unknown[0]), names, n=1)
        hint = f"; did you mean {_join(path, close[0])}?" if close else ""
        raise ConfigError(
            f"unknown config key {where}{hint} (expected one of {[_join(path, n) for n in names]})"
        )
    kwargs = {k: _convert(hints[k], v, _join(path, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        field_name = str(exc).split(":", 1)[
            0
        ]  # a check of the dataclass names its field: give the dotted path
        joined = f"{path}.{exc}" if path and field_name in names else f"{path + ': ' if path else ''}{exc}"
        raise ConfigError(joined) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or '<root>'}: {exc}") from exc


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: {value!r}, expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: {list(value)!r}, expected a list of {len(args)} values")
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {value!r}, expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: {value!r}, expected an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: {value!r}, expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {value!r}, expected a string")
        return value
    return value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a nested dict (values parsed as YAML: ``x=1e-3``, ``y=[1,2]``, ``z=true``).

    Args:
        data: the nested mapping from the YAML file (not modified).
        overrides: strings ``dotted.key=value``.

    Returns:
        A new nested dict. Unknown keys are caught later by :func:`from_dict`.
    """
    out = _deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
        parts = key.strip().split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def _deepcopy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deepcopy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deepcopy(v) for v in data]
    return data


def load_config(
    path: str | os.PathLike | None = None, overrides: Sequence[str] = (), cls: type[T] = Config
) -> T:  # type: ignore[assignment]
    """Read a YAML config (or start from the defaults), apply overrides, and build ``cls``.

    Args:
        path: YAML file; ``None`` starts from the defaults.
        overrides: ``dotted.key=value`` strings, applied after the file.
        cls: the top-level dataclass (default :class:`Config`).

    Raises:
        ConfigError: unreadable file, invalid YAML, unknown keys or invalid values (the message names the file
            and the dotted key).
    """
    data: Any = {}
    where = "<defaults>"
    if path is not None:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    data = apply_overrides(data, overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain nested dicts and lists (YAML/JSON ready); inverse of :func:`from_dict`."""
    return _plain(dataclasses.asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def dump_config(cfg: Any) -> str:
    """YAML text of a config (keys in field order); ``load_config`` of it gives ``cfg`` back."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write :func:`dump_config` to ``path`` atomically."""
    from p2m.io import write_text

    write_text(path, dump_config(cfg))
