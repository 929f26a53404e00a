"""A scenario's configuration (config/scenarios/<name>.yaml): data, model, warm-up, rounds, evaluation.

Defaults are the official code's values (reference §1); every deliberate difference is a named option.
Each stage reads only its own part: the warm-up reads `warmup`, round r's pseudo-labelling reads
`rounds[r-1].pseudo`, and so on, so that editing round 2 changes nothing upstream of round 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hiast.classes import METRIC_CLASSES, SYNTHIA_ABSENT_TRAINIDS
from hiast.config import ConfigError, build, field, load_yaml, merge
from hiast.datasets import DATASETS, LABEL_SPACES

BACKBONES = ("resnet101", "resnet50", "resnet18", "resnet18_full")
NUM_CLASSES = {"cityscapes19": 19, "oxford9": 9}
# The metric of a label space when a scenario names none (and in a stage's config slice, which leaves
# `metrics` out so that editing them reruns only the evaluations).
DEFAULT_METRICS = {"cityscapes19": ("mIoU-19",), "oxford9": ("mIoU-9",)}


@dataclass(frozen=True)
class DataConfig:
    dataset: str = field("cityscapes", choices=DATASETS)
    root: Path = Path("data/cityscapes")
    train_split: str = "train"
    val_split: str | None = "val"
    # Fraction of the train split held out for evaluation (source held-out mIoU); 0 = none.
    holdout: float = field(0.0, low=0.0, high=0.5, high_open=True)
    # Cap on the images used from the train split (0 = all): the smoke preset shrinks with it.
    max_images: int = field(0, low=0)
    # Training crop: "ms" (GTA5/SYNTHIA/Cityscapes, 512x1024 at 1024 rows) or "oms" (Cityscapes->Oxford,
    # 768x1024 at 960 rows, w/h 4:3), with crop heights from 341 to `crop_max_height` official pixels.
    crop: str = field("ms", choices=("ms", "oms"))
    crop_max_height: int = field(1000, low=341)


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = field("resnet101", choices=BACKBONES)
    pretrained: bool = True           # ImageNet weights for the trunk (cluster only; needs the file)
    aspp_dilations: tuple[int, ...] = (6, 12, 18, 24)
    freeze_bn: bool = True            # BN affine parameters frozen, as the official code
    # Compute, not weights (the official code: fp32, contiguous). bf16 autocast halves the time of the light
    # model on CPUs with AVX512-BF16 or AMX and speeds up Ampere+ GPUs; elsewhere it is slower, keep fp32.
    precision: str = field("fp32", choices=("fp32", "bf16"))
    channels_last: bool = False


@dataclass(frozen=True)
class SupervisedStage:
    iterations: int = field(2000, low=0)
    batch_size: int = field(4, low=1)
    lr: float = field(1e-4, low=0, low_open=True)
    head_lr_mult: float = field(10.0, low=0, low_open=True)
    weight_decay: float = field(5e-4, low=0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = field("constant", choices=("cosine", "constant"))
    workers: int = field(0, low=0)
    log_every: int = field(100, low=0)
    checkpoint_every: int = field(500, low=0)


@dataclass(frozen=True)
class AdversarialStage:
    """AdaptSegNet / AdvEnt-style output-space adversarial warm-up (reference §1.0)."""
    iterations: int = field(0, low=0)
    batch_size: int = field(4, low=1)
    lr: float = field(2.5e-5, low=0, low_open=True)
    head_lr_mult: float = field(10.0, low=0, low_open=True)
    weight_decay: float = field(5e-4, low=0)
    discriminator_lr: float = field(1e-4, low=0, low_open=True)
    adversarial_weight: float = field(0.05, low=0)
    discriminator_weight: float = field(1.0, low=0)
    discriminator_input: str = field("softmax", choices=("softmax", "entropy"))  # AdaptSeg | AdvEnt
    gan_loss: str = field("lsgan", choices=("bce", "lsgan"))  # official default: LSGAN (MSE)
    # D's compute (the official code: fp32, which the model's precision does not change). "bf16": D under bfloat16
    # autocast; on the embedded benchmark's CPU D in fp32 is over half of an adversarial iteration, which bf16
    # cuts to 0.74-0.78x; other rounding, so another warm-up (BENCHMARKS.md, "Where the warm-ups' time goes").
    discriminator_precision: str = field("fp32", choices=("fp32", "bf16"))
    target_entropy_weight: float = field(0.0, low=0)            # MinEnt on the whole target image
    source_weight: float = field(1.0, low=0)
    workers: int = field(0, low=0)
    log_every: int = field(100, low=0)
    checkpoint_every: int = field(500, low=0)


@dataclass(frozen=True)
class WarmupConfig:
    source_only: SupervisedStage = field(default_factory=SupervisedStage)
    adversarial: AdversarialStage = field(default_factory=AdversarialStage)
    # Import a warm-up checkpoint (e.g. the published AdaptSeg warm-up) instead of training one.
    checkpoint: Path | None = None


@dataclass(frozen=True)
class PseudoConfig:
    policy: str = field("IAS", choices=("IAS", "CBST", "CT", "NT"))
    alpha: float = field(0.5, low=0, high=1, low_open=True)
    beta: float = field(0.9, low=0, high=1, high_open=True)
    gamma: float = field(8.0, low=0)
    initial_threshold: float = field(0.9, low=0, high=1)
    instance_size: int = field(2, low=1)       # images per IAS instance (official: batches of 2)
    ct_threshold: float = field(0.9, low=0, high=1)
    cbst_p: float = field(0.2, low=0, high=1, low_open=True)
    cbst_sample_interval: int = field(4, low=1)
    class_conf_momentum: float = field(0.99, low=0, high=1)
    workers: int = field(0, low=0)              # loader processes decoding images ahead (0: a thread, if a CPU is free)
    shards: int = field(1, low=1)               # parallel inference shards
    input_scale: float = field(0.75, low=0, low_open=True)  # inference size = 768x1536 at 1024 rows
    # Not in HIAST: "target" re-estimates the labelling model's BatchNorm statistics on target train crops
    # (AdaBN, adabn.ADABN_IMAGES weak-view crops) before it labels; "as_saved" = the official code.
    bn_statistics: str = field("as_saved", choices=("as_saved", "target"))


@dataclass(frozen=True)
class BankConfig:
    enabled: bool = True                        # HPLA on/off (ablation)
    num_hard: int = field(14, low=0)
    drop_smallest: float = field(0.1, low=0, high=1, high_open=True)
    paste: str = field("all_hard", choices=("all_hard", "sampled"))  # official: all hard-class pixels
    max_donors: int = field(1, low=1)           # official: effectively one donor (reference §5.3)
    probability: float = field(1.0, low=0, high=1)


@dataclass(frozen=True)
class SelfTrainConfig:
    iterations: int = field(8000, low=0)
    batch_size: int = field(6, low=1)           # global batch, divided over the GPUs
    lr: float = field(3e-6, low=0, low_open=True)  # backbone; ASPP x head_lr_mult
    head_lr_mult: float = field(10.0, low=0, low_open=True)
    weight_decay: float = field(5e-4, low=0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = field("cosine", choices=("cosine", "constant"))
    ce_weight: float = field(1.0, low=0)
    kld_weight: float = field(0.1, low=0)       # RAR on pseudo-labelled pixels
    entropy_weight: float = field(1.0, low=0)   # RAR on the other pixels
    consistency_weight: float = field(0.5, low=0)
    consistency_region: str = field("ignored", choices=("ignored", "confident", "all"))
    # Not in HIAST (its rounds read only the target): CE on a labelled source batch of the same size each
    # iteration, weighted by this; 0 = the official recipe. Guards a from-scratch model against forgetting.
    source_weight: float = field(0.0, low=0)
    ema_momentum: float = field(0.999, low=0, high=1)
    strong_view: bool = True                    # the student sees the CCA view for every loss
    workers: int = field(0, low=0)
    # Execution only (the numbers do not change, bit for bit): load the next batch in a background thread (or
    # the `workers` processes), at a lower CPU priority, and run the teacher's forward beside the student's.
    # Not in the official code. On the 2-core machine the iteration measured 1.13-1.72x a bare forward/backward
    # on one CPU (median 1.28 with `workers: 1` and `fused_objective: true`, 1.34 without) and 1.09-1.13 (1.04-1.08
    # with those two) on another (BENCHMARKS.md); false = the plain serial loop.
    overlap: bool = True
    # BatchNorm running statistics during the round. "student" (the official code): updated by the student's
    # forward in train mode, on the strong views, and copied by the EMA teacher. Not in HIAST: "frozen" keeps
    # the initial model's (BN layers in eval mode); "target" first re-estimates them on target train crops
    # (AdaBN, as pseudo.bn_statistics: target does for the labeller), then keeps them frozen.
    bn_statistics: str = field("student", choices=("student", "frozen", "target"))
    # Execution only (the same sums, rounded differently: ~1e-7 relative): true computes the four losses and
    # their gradient by hand (losses.fused_objective, ~12 elementwise passes) instead of autograd's tape of ~25
    # over the upsampled logits. false = the official code's way, and the default so
    # that earlier results replay bit for bit.
    fused_objective: bool = False
    log_every: int = field(100, low=0)
    checkpoint_every: int = field(500, low=0)


@dataclass(frozen=True)
class RoundConfig:
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    train: SelfTrainConfig = field(default_factory=SelfTrainConfig)


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = field(2, low=1)
    input_scale: float = field(0.75, low=0, low_open=True)  # 768x1536 at 1024 rows
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    save_masks: int = field(4, low=0)           # colour masks saved per evaluation


@dataclass(frozen=True)
class Scenario:
    name: str = "scenario"
    seed: int = 888
    label_space: str = field("cityscapes19", choices=LABEL_SPACES)
    metrics: tuple[str, ...] = ()               # empty: DEFAULT_METRICS of the label space
    base_size: tuple[int, int] = (1024, 2048)   # every image is resized to this first
    device: str = "auto"
    gpus: int = field(1, low=1)
    synthetic: bool = False                     # the data come from `hiast generate`
    source: DataConfig = field(default_factory=lambda: DataConfig(dataset="gta5", root=Path("data/GTA5"),
                                                                  val_split=None))
    target: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    rounds: tuple[RoundConfig, ...] = (RoundConfig(), RoundConfig(), RoundConfig())
    evaluation: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if not self.metrics:
            object.__setattr__(self, "metrics", DEFAULT_METRICS.get(self.label_space, ("mIoU-19",)))

    def validate(self) -> None:
        for metric in self.metrics:
            if metric not in METRIC_CLASSES:
                raise ConfigError(f"metrics: unknown metric {metric!r}; expected some of {list(METRIC_CLASSES)}")
        if self.label_space == "oxford9" and set(self.metrics) - {"mIoU-9"}:
            raise ConfigError("metrics: the oxford9 label space only has mIoU-9")
        for r, rnd in enumerate(self.rounds):
            if rnd.train.batch_size % self.gpus:
                raise ConfigError(f"rounds[{r}].train.batch_size: {rnd.train.batch_size} is not divisible by "
                                  f"gpus={self.gpus}; the global batch is kept, so choose a multiple")
        if self.target.val_split is None:
            raise ConfigError("target.val_split: the target needs a labelled validation split")

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.label_space]

    @property
    def scale(self) -> float:
        return self.base_size[0] / 1024

    def crop_view(self, side: str):
        """The training crop of the `source` or `target` images."""
        from hiast.transforms import crop_view
        data = getattr(self, side)
        return crop_view(data.crop, self.base_size[0], data.crop_max_height)

    def sized(self, factor: float) -> tuple[int, int]:
        """The base size times `factor` (e.g. 0.75: the official 768x1536 inference size at 1024x2048)."""
        return max(8, round(self.base_size[0] * factor)), max(8, round(self.base_size[1] * factor))

    @property
    def excluded_hard_classes(self) -> tuple[int, ...]:
        """Classes the source never shows (SYNTHIA: terrain, truck, train) are never hard."""
        return SYNTHIA_ABSENT_TRAINIDS if self.source.dataset == "synthia" else ()


def load_scenario(path: str | Path, overrides: dict | None = None) -> Scenario:
    """Read config/scenarios/<name>.yaml (safe_load), apply `overrides` (e.g. the smoke preset), validate."""
    data = merge(load_yaml(path), overrides or {})
    data.setdefault("name", Path(path).stem)
    return build(Scenario, data, where=str(path))
