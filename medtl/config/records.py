"""The typed records of the config's sections (all but the arms, see :mod:`.arms`).

Each is a frozen dataclass built by :func:`medtl.config.parse.parse_section` from its
section of the validated config. Their defaults are the schema's
(``pipeline/schemas/config.schema.yaml``); ``tests/config/test_defaults.py`` fails on
any that differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medtl.config.choices import (
    BLEND_MODES,
    DATASET_KINDS,
    EMPTY_DICE,
    NORMALIZATIONS,
    POSTPROCESS_CANDIDATES,
    SPACING_MODES,
    WINDOW_MODES,
    check_choice,
)
from medtl.kernel.errors import ConfigError

#: The top-level defaults a stage falls back on when its settings leave a key out: the
#: schema's ``seed``, ``device`` and ``classes`` (``tests/config/test_defaults.py``).
DEFAULT_SEED = 1
DEFAULT_DEVICE = "auto"
DEFAULT_CLASSES: dict[str, str] = {"1": "foreground"}


@dataclass(frozen=True)
class ModelConfig:
    """The segmentation network.

    Attributes:
        name: architecture from :data:`medtl.models.networks.ARCHITECTURES`:
            ``basicunet``, ``flexibleunet`` (ResNet encoder), ``swinunetr``,
            ``plainconvunet`` (nnU-Net's PlainConvUNet), ``resencunet`` (nnU-Net's
            ResidualEncoderUNet, ResEnc presets), ``primus`` (the nnU-Net group's 3-D
            transformer, :mod:`medtl.models.primus`).
        features: channel widths (``basicunet``: six numbers; ``swinunetr``: the first is
            its feature size; ``plainconvunet``, ``resencunet``: one per stage;
            ``primus``: ``[embed_dim, depth, heads]``, overriding ``preset``).
        backbone: encoder backbone, for architectures that have one (``flexibleunet``).
        dropout: dropout probability (not used by ``primus``).
        preset: ``primus`` only: its size, ``S``, ``B``, ``M`` or ``L`` (DNA's PrimusS …
            PrimusL; nnssl pretrains M).
        patch_embed: ``primus`` only: voxels per token along each axis, a power of two.
    """

    name: str = "basicunet"
    features: tuple[int, ...] = (16, 16, 32, 64, 128, 16)
    backbone: str = "resnet10"
    dropout: float = 0.0
    preset: str = "M"
    patch_embed: int = 8


@dataclass(frozen=True)
class AugmentConfig:
    """MONAI random augmentations applied to training patches."""

    flip: float = 0.5
    rotate90: float = 0.5
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    noise: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation budget and schedule, the same for every arm.

    Attributes:
        steps: optimiser steps per run.
        batch_size: patches per step.
        patch_size: training patch in voxels (each a multiple of 16 for ``basicunet``).
        lr: base learning rate (AdamW), cosine-annealed to zero.
        weight_decay: AdamW weight decay.
        val_every: validate on the inner validation cases every N steps.
        pos_fraction: share of patches centred on foreground.
        augment: augmentation probabilities and magnitudes.
        warmup_steps: linear learning-rate warm-up over the first N steps, then the
            cosine decay over the remaining steps (0 = no warm-up).
        patience: early stopping: stop after N validations in a row without a better
            validation Dice (0 = off).
        checkpoint_every: save the full training state (weights, optimiser, scheduler,
            random generators, step, best metric) every N steps, so that a killed job
            resumes where it stopped (besides every validation).
        prefetch: batches a background thread prepares ahead while the network trains
            (0 = off); the batches and results are the same either way.
        amp: on a CUDA device, run the forward pass in bfloat16 autocast (the loss in
            float32); ignored on the CPU.
        channels_last: on a CUDA device, keep the network and its input in the
            ``channels_last_3d`` memory format; ignored on the CPU.
    """

    steps: int = 300
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (32, 32, 16)
    lr: float = 2e-3
    weight_decay: float = 1e-5
    val_every: int = 50
    pos_fraction: float = 0.5
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    warmup_steps: int = 0
    patience: int = 0
    checkpoint_every: int = 25
    prefetch: int = 2
    amp: bool = True
    channels_last: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_steps < self.steps:
            raise ConfigError(
                f"config key 'train.warmup_steps': got {self.warmup_steps}; expected 0 to "
                f"{self.steps - 1} (fewer than train.steps = {self.steps}). How to fix: "
                "lower warmup_steps, e.g. to a tenth of the steps"
            )


@dataclass(frozen=True)
class PretrainConfig:
    """Supervised pretraining on the source set, or a checkpoint of your own.

    Attributes:
        source: the labelled source set (case sheet, MSD folder) to pretrain on.
        checkpoint: a weights file (or MONAI bundle folder) to use instead of running the
            pretrain stage.
        format: the checkpoint's format (``auto`` detects it), see
            :data:`medtl.models.weights.FORMATS`.
        min_loaded_fraction: refuse a checkpoint that initialises less of the encoder.
        max_unused_fraction: refuse a checkpoint when more of its encoder's values find
            no place in the model (weights of another architecture).
        steps, batch_size, lr, val_every, patch_size: the pretraining schedule.
        checkpoint_every: save the full pretraining state every N steps (resumable).
    """

    source: str | None = None
    checkpoint: str | None = None
    format: str = "auto"
    min_loaded_fraction: float = 0.9
    max_unused_fraction: float = 0.05
    steps: int = 400
    batch_size: int = 2
    lr: float = 2e-3
    val_every: int = 100
    patch_size: tuple[int, int, int] = (32, 32, 16)
    checkpoint_every: int = 50


@dataclass(frozen=True)
class PreprocessConfig:
    """How cases are brought to one grid and intensity scale.

    Attributes:
        target_spacing: ``auto`` (median spacing of the data set), ``like_pretrained``
            (the spacing ``pretrain.checkpoint`` was pretrained at) or three numbers in mm.
        normalization: ``auto`` (by modality), ``zscore``, ``ct`` or ``like_pretrained``
            (the checkpoint's scheme, as medtl names it).
        crop_foreground: crop each case to its non-zero bounding box.
        workers: cases preprocessed at once (processes); changes the speed, not the plan
            or the cases, so the workflow keeps it out of the plan's settings.
    """

    target_spacing: str | tuple[float, float, float] = "auto"
    normalization: str = "auto"
    crop_foreground: bool = True
    workers: int = 2

    def __post_init__(self) -> None:
        check_choice(self.normalization, NORMALIZATIONS, "preprocess.normalization")
        if isinstance(self.target_spacing, str):
            check_choice(self.target_spacing, SPACING_MODES, "preprocess.target_spacing")

    @property
    def like_pretrained(self) -> bool:
        """Whether the plan takes its spacing or normalisation from the checkpoint."""
        return "like_pretrained" in (self.target_spacing, self.normalization)


@dataclass(frozen=True)
class PredictConfig:
    """Sliding-window inference.

    Attributes:
        overlap: overlap of neighbouring windows (0 to <1).
        sw_batch_size: windows run through the network at once.
        mode: blending of overlapping windows, ``gaussian`` or ``constant``.
        tta: test-time augmentation: also predict the 7 mirrored copies of the case (every
            combination of flips along the three axes) and average the probabilities.
        amp: on a CUDA device, run the network in bfloat16 autocast (probabilities are
            summed in float32); ignored on the CPU.
        channels_last: on a CUDA device, run the network in the ``channels_last_3d``
            memory format; ignored on the CPU.
        window: the sliding window's size: ``patch`` (the training patch), ``image``
            (:func:`medtl.predict.window.prediction_window`: sides from the patch up to the
            case's that compute the fewest voxels, in windows of at most 16 times the
            patch's voxels; a network of any side, ``basicunet``, runs a case that fits as
            one window of its own shape) or three sides ``[x, y, z]``. ``primus`` is built
            for its training patch and always uses it.
    """

    overlap: float = 0.5
    sw_batch_size: int = 4
    mode: str = "gaussian"
    tta: bool = False
    amp: bool = True
    channels_last: bool = False
    window: str | tuple[int, int, int] = "patch"

    def __post_init__(self) -> None:
        check_choice(self.mode, BLEND_MODES, "predict.mode")
        if isinstance(self.window, str):
            check_choice(self.window, WINDOW_MODES, "predict.window")
        elif len(self.window) != 3 or any(int(side) < 1 for side in self.window):
            raise ConfigError(
                f"config key 'predict.window': got {list(self.window)}; expected patch, "
                "image or three positive sides [x, y, z]. How to fix: e.g. window: image"
            )


@dataclass(frozen=True)
class EvaluateConfig:
    """How predictions are scored against the reference labels.

    Attributes:
        nsd_tolerance_mm: tolerance of the normalised surface Dice, in mm, for every class
            not named in ``nsd_tolerance_by_class``.
        nsd_tolerance_by_class: per class name, its own tolerance in mm.
        empty_dice: Dice (and IoU, NSD) when reference and prediction are both empty:
            ``one`` (a perfect empty answer) or ``nan`` (left out of the means).
        bootstrap: resamples of the bootstrap confidence intervals.
    """

    nsd_tolerance_mm: float = 2.0
    nsd_tolerance_by_class: dict[str, float] = field(default_factory=dict)
    empty_dice: str = "one"
    bootstrap: int = 2000

    def __post_init__(self) -> None:
        if self.empty_dice not in EMPTY_DICE:
            raise ConfigError(
                f"config key 'evaluate.empty_dice': got {self.empty_dice!r}; expected one of "
                f"{', '.join(EMPTY_DICE)}"
            )
        bad = {k: v for k, v in self.nsd_tolerance_by_class.items() if not v > 0}
        if not self.nsd_tolerance_mm > 0 or bad:
            raise ConfigError(
                "config key 'evaluate.nsd_tolerance_mm': expected tolerances > 0 mm, got "
                f"{self.nsd_tolerance_mm!r} and per class {bad or '{}'}"
            )

    def tolerance(self, class_name: str) -> float:
        """The NSD tolerance of one class, in mm."""
        return float(self.nsd_tolerance_by_class.get(class_name, self.nsd_tolerance_mm))


@dataclass(frozen=True)
class PostprocessConfig:
    """Post-processing chosen on cross-validation, per arm and class (as nnU-Net does).

    Attributes:
        enabled: try the candidates on the cross-validation predictions at all.
        candidates: ``largest`` (keep the largest connected component) and
            ``min_volume`` (remove components smaller than ``min_volume_mm3``).
        min_volume_mm3: the smallest component ``min_volume`` keeps, in mm³.
        min_gain: a candidate is applied only when it raises the class's mean CV Dice by
            more than this.
    """

    enabled: bool = True
    candidates: tuple[str, ...] = ("largest", "min_volume")
    min_volume_mm3: float = 50.0
    min_gain: float = 0.0

    def __post_init__(self) -> None:
        bad = [c for c in self.candidates if c not in POSTPROCESS_CANDIDATES]
        if bad:
            raise ConfigError(
                f"config key 'postprocess.candidates': got {bad[0]!r}; expected any of "
                f"{', '.join(POSTPROCESS_CANDIDATES)}"
            )


@dataclass(frozen=True)
class TrustConfig:
    """Calibration and failure flags, fitted per arm on its cross-validation predictions.

    Attributes:
        bad_dice: a held-out case whose Dice (mean over classes) is below this counts as a
            failure; the flag threshold is chosen to find them.
        band_voxels: calibration is fitted and measured on the voxels within this many
            voxels of the reference or the predicted structure (far background is
            trivially right and would make any model look calibrated).
        voxels_per_case: at most this many of those voxels per held-out case (a random
            subset when there are more).
        ece_bins: equal-width confidence bins of the expected calibration error.
    """

    bad_dice: float = 0.8
    band_voxels: int = 2
    voxels_per_case: int = 20000
    ece_bins: int = 15


@dataclass(frozen=True)
class ShiftConfig:
    """How the domain shift between source and target is measured (``shift``).

    Attributes:
        patches_per_case: patches of each case the encoder sees (their pooled features
            are averaged into one vector per case).
        patch_size: patch in voxels; None: the training patch (``train.patch_size``).
        permutations: relabellings of the permutation test of the feature MMD.
        seed: seed of the patch positions, voxel samples and permutations.
        alpha: the sets differ to the encoder when the permutation p-value is below this.
        case_z: a target case farther than this many source spreads is flagged.
        outside_fraction: warn when more than this share of target voxels lies outside
            the source's 0.5-99.5 percentile range.
        spacing_factor: warn when the network's spacing is this many times finer or
            coarser than the pretraining's along an axis.
        voxels_per_case: voxels sampled per case for the intensity distributions.
        label_pairs: target label value → the source label value of the same structure
            (values left out are compared with the same value).
    """

    patches_per_case: int = 4
    patch_size: tuple[int, int, int] | None = None
    permutations: int = 1000
    seed: int = 0
    alpha: float = 0.05
    case_z: float = 3.0
    outside_fraction: float = 0.01
    spacing_factor: float = 2.0
    voxels_per_case: int = 20000
    label_pairs: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitsConfig:
    """The cross-validation folds (``splits``).

    Attributes:
        folds: number of folds, grouped by patient.
        seed: the shuffling seed of the folds and of the label-fraction subsets.
        val_fraction: share of each fold's training patients kept for validation.
    """

    folds: int = 5
    seed: int = 0
    val_fraction: float = 0.2


@dataclass(frozen=True)
class ReportConfig:
    """The HTML report (``report``).

    Attributes:
        reference_arm: the arm every other arm is compared with.
        overlays: cases shown as image overlays per arm.
    """

    reference_arm: str = "scratch"
    overlays: int = 3


@dataclass(frozen=True)
class DicomwebConfig:
    """The DICOMweb query of ``dataset.kind: dicomweb`` (``dataset.dicomweb``).

    Attributes:
        url: the DICOMweb root, e.g. ``http://pacs:8042/dicom-web``.
        cache: the local folder the studies are pulled into.
        patient_id, study_uids, modality, date_from, date_to, study_description: the
            query (dates as ``YYYYMMDD``).
        username: the user name of HTTP basic authentication.
        password_env: the environment variable holding the password (never the password).
    """

    url: str | None = None
    cache: str = "data/dicomweb"
    patient_id: str | None = None
    study_uids: tuple[str, ...] = ()
    modality: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    study_description: str | None = None
    username: str | None = None
    password_env: str | None = None


@dataclass(frozen=True)
class DemoDataConfig:
    """The generated demo data (``dataset.demo``): its seed, sizes and the target's shift
    strength (0: drawn from the source domain, 1: the demo's target domain; see
    :func:`medtl.demo.phantoms.shifted_domain`)."""

    seed: int = 7
    n_source: int = 24
    n_patients: int = 14
    shift: float = 1.0


@dataclass(frozen=True)
class DatasetConfig:
    """Where the cases come from (``dataset``).

    Attributes:
        kind: ``demo``, ``path`` (case sheet, NIfTI / nnU-Net / MSD folder), ``dicom``
            or ``dicomweb``.
        path: the case sheet or folder of ``path`` and ``dicom``.
        modality: modality of NIfTI input, e.g. ``CT`` or ``MR``.
        label_synonyms: per class name, other ROI / segment names meaning that class.
        workers: parallel DICOM header reads.
        dicomweb: the query of ``kind: dicomweb``.
        demo: the generated demo data of ``kind: demo``.
    """

    kind: str = "demo"
    path: str | None = None
    modality: str = "MR"
    label_synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    workers: int = 4
    dicomweb: DicomwebConfig = field(default_factory=DicomwebConfig)
    demo: DemoDataConfig = field(default_factory=DemoDataConfig)

    def __post_init__(self) -> None:
        check_choice(self.kind, DATASET_KINDS, "dataset.kind")
