"""Experiment configuration: the validated, frozen pydantic models of every section. Unknown keys
are rejected and the message lists the valid ones; how a YAML file and ``--set`` overrides become
an :class:`ExperimentConfig`: :mod:`medseg.config.load`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Triple = tuple[float, float, float]


IntTriple = tuple[int, int, int]
# a key whose null is filled by planning at the start of training (medseg.planning.resolve); the
# configuration reference shows "planned" for it instead of a default
PLANNED = {"planned": True}


class Section(BaseModel):
    """Base for every config section: frozen, unknown keys forbidden."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    """Where the cases are, which channels and label values are used, how they are split and cached."""

    # case ids written as plain numbers ([104252]) are the ids "104252"; the config loader keeps a
    # number's text whenever it differs from the number's (0012)
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    dataset: Path = Field(
        description="Dataset folder (MSD or nnU-Net raw, with dataset.json; or the root of a pattern layout) or a "
        "case list (.csv/.yaml). $VARS are expanded."
    )
    layout: Literal["auto", "msd", "nnunet", "list", "pattern"] = Field(
        "auto",
        description="auto = list for .csv/.yaml, nnunet when dataset.json has channel_names + file_ending, else msd.",
    )
    channels: tuple[str, ...] | None = Field(
        None,
        description="pattern layout: one glob per channel with {case} (e.g. '*/{case}/Flair.nii.gz'); other layouts: "
        "channel names to use, in order (null = all).",
    )
    label: str | None = Field(None, description="pattern layout: glob of the label file with {case}.")
    lesion_labels: tuple[int, ...] | None = Field(
        None,
        description="Label values that are lesion (e.g. BraTS [1, 2, 3, 4] = whole tumour); the others are "
        "background; null = every non-zero value.",
    )
    lesion_classes: dict[str, tuple[int, ...]] | None = Field(
        None,
        description="Several lesion classes, one network output each (sigmoid, may overlap), e.g. {whole_tumour: [1, "
        "2, 3, 4], tumour_core: [1, 3, 4], enhancing: [4]}; instead of lesion_labels.",
    )
    exclude_cases: tuple[str, ...] | None = Field(
        None, description="Case ids never used (e.g. a held-out test set in the same folder)."
    )
    allow_outside: bool = Field(
        False,
        description="Accept case files outside the dataset folder (absolute or '..' paths in a case list, pattern "
        "globs or MSD entries leading elsewhere); false = such a path is a problem 'medseg check' names.",
    )
    val_cases: tuple[str, ...] | None = Field(
        None, description="Case ids used for validation; null = a seeded random val_fraction."
    )
    review_marks: Path | None = Field(
        None,
        description="A review_marks.json of 'medseg review' (e.g. a review of the training labels): the scans the "
        "reviewer rejected are left out of training and validation, and listed when training starts. $VARS are "
        "expanded; a relative path is relative to the config file.",
    )
    group_pattern: str | None = Field(
        None,
        description="Regular expression whose match in the case id (its first group if it has one) names the case's "
        "group, e.g. the patient of several time points: '^(P\\d+)_'. Folds and random splits keep a "
        "group together; null = every case its own group.",
    )
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Share of training cases held out for validation.")
    plan: Path | None = Field(
        None,
        description="plan.yaml from 'medseg plan'; null = plan the dataset at the start of training. Keys set in "
        "this config win over the plan.",
    )
    cache_rate: float = Field(1.0, ge=0, le=1, description="Share of preprocessed cases kept in memory.")
    cache_dir: Path | None = Field(
        None,
        description="Folder for a disk cache of preprocessed cases (MONAI PersistentDataset), reused across runs; "
        "null = memory (CacheDataset).",
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (0 = main process).")
    thread_loader: bool = Field(
        False,
        description="MONAI ThreadDataLoader: prepare the next batch in a background thread (GPU training with cached "
        "data).",
    )


class PreprocessConfig(Section):
    """Deterministic preprocessing shared by training, validation and predict."""

    target_spacing: Triple | None = Field(
        None,
        description="Voxel spacing (mm) the model works at; null = planned: the dataset's median spacing (a coarse "
        "axis of an anisotropic median: its 10th percentile).",
        json_schema_extra=PLANNED,
    )
    normalize: Literal["zscore_nonzero", "zscore", "ct", "robust", "whitestripe", "nyul", "none"] | None = Field(
        None,
        description="Per channel: zscore_nonzero (MRI), zscore, ct (clip to ct_stats low/high, then (x - mean) / "
        "std), robust (clip to the foreground's 0.5-99.5 percentiles, minus the median, over IQR/1.349), "
        "whitestripe (ratio to the normal-tissue peak of the histogram, (x / peak - 1) / 0.2: steadier across "
        "sites; raw intensities), nyul "
        "(histogram landmarks mapped onto the training set's, preprocess.landmarks), none; null = planned: ct "
        "when every channel is named CT, else zscore_nonzero.",
        json_schema_extra=PLANNED,
    )
    background: Literal["zero", "min", "otsu"] = Field(
        "zero",
        description="Which voxels are outside the body: zero, min (each channel's minimum, for scans already "
        "z-scored with a constant background) or otsu (outside the largest Otsu-thresholded region: skull-on scans, "
        "noisy air, spline ringing); they are cropped away and left out of the normalisation.",
    )
    ct_stats: tuple[tuple[float, float, float, float], ...] | None = Field(
        None,
        description="ct normalisation: [low, high, mean, std] per channel (medseg plan writes them from the "
        "foreground).",
        json_schema_extra=PLANNED,
    )
    landmarks: tuple[tuple[float, ...], ...] | None = Field(
        None,
        description="nyul normalisation: the standard histogram landmarks (at the 1, 10, 20, ..., 90, 99th foreground "
        "percentiles) per channel, fitted on the training cases (medseg plan and train write them).",
        json_schema_extra=PLANNED,
    )


class SamplingConfig(Section):
    """Training patch sampling."""

    patch_size: IntTriple | None = Field(
        None,
        description="Patch size in voxels (x, y, z); null = planned: the median scan at the target spacing, fitted "
        "to memory_gb (medseg plan shows it).",
        json_schema_extra=PLANNED,
    )
    samples_per_volume: int = Field(2, gt=0, description="Patches drawn from each loaded volume per step.")
    strategy: Literal["lesion", "voxel"] = Field(
        "lesion",
        description="lesion: pick a lesion uniformly, then a voxel in it; voxel: a lesion voxel uniformly (MONAI "
        "RandCropByPosNegLabeld).",
    )
    size_power: float = Field(0.0, ge=0, description="lesion strategy: weight lesions by size^-p (0 = uniform).")
    pos_fraction: float = Field(0.5, ge=0, le=1, description="Share of patches centred on a lesion.")
    memory_gb: float = Field(
        8.0,
        gt=0,
        le=4096,
        description="Training memory budget (GB: GPU memory, or RAM on CPU) the planned patch_size fits.",
    )

    @model_validator(mode="after")
    def _positive_patch(self) -> SamplingConfig:
        if self.patch_size is not None and min(self.patch_size) <= 0:
            raise ValueError(f"patch_size must be positive in every axis, got {list(self.patch_size)}")
        return self


class AugmentConfig(Section):
    """Training augmentation: a preset plus per-transform probabilities (null = the preset's).

    ``none``: nothing. ``light`` (the default, medseg 0.2's augmentation exactly): flips with
    ``mirror_prob`` (0.5) and +-10 % intensity scale/shift with ``intensity_prob`` (0).
    ``nnunet``: nnU-Net's default set and ranges: rotation, scaling, Gaussian noise and blur,
    multiplicative brightness, contrast, simulated low resolution, gamma (inverted and not),
    mirroring; elastic deformation off, as in nnU-Net (set elastic_prob to use it).
    ``site``: nnunet plus what changes between hospitals: bias fields, wider brightness, contrast,
    gamma and noise, thick slices, a tighter or looser body mask, motion and ghosting.
    ``faint_prob``, off in every preset, makes the labelled lesions fainter; ``renorm_prob``, off
    in every preset, moves the body's z-scores as another brain mask would; ``tail_prob``, off in
    every preset, lowers the contrast above the body's median.
    """

    preset: Literal["none", "light", "nnunet", "site"] = Field(
        "light",
        description="none, light (flips + intensity jitter, as before), nnunet, or site (nnunet + scanner and site "
        "shifts).",
    )
    rotate_prob: float | None = Field(None, ge=0, le=1, description="Random rotation (nnunet: 0.2).")
    rotate_deg: float = Field(30.0, ge=0, le=180, description="Rotation range, +- degrees about each axis.")
    scale_prob: float | None = Field(None, ge=0, le=1, description="Random scaling (nnunet: 0.2).")
    scale_range: tuple[float, float] = Field((0.7, 1.4), description="Scale factors (nnU-Net's 0.7-1.4).")
    elastic_prob: float | None = Field(None, ge=0, le=1, description="Elastic deformation (nnunet: 0, off).")
    noise_prob: float | None = Field(None, ge=0, le=1, description="Gaussian noise, variance up to 0.1 (nnunet: 0.1).")
    blur_prob: float | None = Field(None, ge=0, le=1, description="Gaussian blur, sigma 0.5-1 voxel (nnunet: 0.2).")
    brightness_prob: float | None = Field(
        None, ge=0, le=1, description="Multiplicative brightness x0.75-1.25 (nnunet: 0.15)."
    )
    contrast_prob: float | None = Field(
        None, ge=0, le=1, description="Contrast x0.75-1.25 about the mean, range kept (nnunet: 0.15)."
    )
    lowres_prob: float | None = Field(
        None, ge=0, le=1, description="Simulated low resolution, zoom 0.5-1 (nnunet: 0.25)."
    )
    gamma_prob: float | None = Field(
        None, ge=0, le=1, description="Gamma 0.7-1.5, statistics kept (nnunet: 0.3, plus 0.1 on the inverted image)."
    )
    mirror_prob: float | None = Field(None, ge=0, le=1, description="Flip along each axis (light and nnunet: 0.5).")
    bias_prob: float | None = Field(
        None, ge=0, le=1, description="Smooth multiplicative bias field, degree 3, coefficients 0-0.3 (site: 0.3)."
    )
    thick_prob: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Thick slices: averaged over 2-6 voxels along one axis (z half the time), then linearly "
        "upsampled back, as a 2D acquisition resampled to the model's grid (site: 0.25).",
    )
    edge_prob: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Body mask eroded or dilated by 1-3 voxels, as another skull-stripping would cut (site: 0.2).",
    )
    motion_prob: float | None = Field(None, ge=0, le=1, description="TorchIO RandomMotion (site: 0.1).")
    ghost_prob: float | None = Field(None, ge=0, le=1, description="TorchIO RandomGhosting (site: 0.1).")
    faint_prob: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Fainter lesions: inside the labelled lesions the image is pulled towards the tissue around "
        "them, keeping 50-100 % of their contrast, as at a site where lesions are less conspicuous (off in every "
        "preset).",
    )
    renorm_prob: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Another brain mask under the same z-score: the body's values z -> (z - b) / a, b within +-0.3, "
        "a within 0.85-1.15 (off in every preset).",
    )
    tail_prob: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Less contrast above the typical tissue: body values above the body's median m mapped "
        "z -> m + k (z - m), k within 0.5-1.0, lesions and normal bright tissue alike (off in every preset).",
    )
    intensity_prob: float | None = Field(
        None,
        ge=0,
        le=1,
        description="light: probability of a random intensity scale and of a shift (each +-10 %, MONAI's BraTS "
        "recipe; helps across scanners) (light: 0; nnunet: off, it has its own).",
    )

    @model_validator(mode="after")
    def _ordered_scale(self) -> AugmentConfig:
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be [low, high] with 0 < low <= high, got {list(self.scale_range)}")
        return self


class ModelConfig(Section):
    """Network choice (see :mod:`medseg.nn.registry`)."""

    name: str = Field(
        "unet",
        description="Network: unet (MONAI UNet), dynunet (MONAI DynUNet, nnU-Net's topology planned from spacing and "
        "patch), segresnet (MONAI SegResNetDS, the BraTS 2018 winner's design).",
    )
    channels: tuple[int, ...] = Field(
        (16, 32, 64, 128),
        description="Feature maps per level (dynunet: the first sets the width, doubled per level up to 320; "
        "segresnet: the first is init_filters and the count the depth).",
    )
    strides: tuple[int, ...] = Field((2, 2, 2), description="unet: down-sampling stride between levels.")
    kernel_sizes: tuple[IntTriple, ...] | None = Field(
        None,
        description="dynunet: kernel per level (x, y, z); null = planned (medseg plan shows it).",
        json_schema_extra=PLANNED,
    )
    level_strides: tuple[IntTriple, ...] | None = Field(
        None,
        description="dynunet: stride per level (x, y, z), the first [1, 1, 1]; null = planned: halve an axis while "
        "its spacing is within 2x of the finest and its size >= 8.",
        json_schema_extra=PLANNED,
    )
    deep_supervision: bool = Field(
        False,
        description="dynunet/segresnet: extra outputs at 1/2, 1/4, ... resolution, trained on downsampled targets "
        "with nnU-Net's weights (1/2^i, the lowest 0).",
    )
    ds_heads: int = Field(
        2, ge=1, description="dynunet/segresnet with deep_supervision: number of extra low-resolution outputs."
    )
    num_res_units: int = Field(1, ge=0, description="Residual units per block.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout probability.")
    norm: Literal["instance", "batch"] = Field("instance", description="Normalisation layer.")


class LossConfig(Section):
    """Loss by name (see :mod:`medseg.nn.losses`); options not used by a loss are ignored by it."""

    name: str = Field("focal_dice", description="focal_dice, focal_dice_blob, dice, focal, bce_dice (= ce_dice).")
    gamma: float = Field(2.0, ge=0, description="Focal exponent.")
    alpha: float | None = Field(0.25, ge=0, le=1, description="Focal weight of positives; null = none.")
    w_focal: float = Field(1.0, ge=0, description="Weight of the focal (or BCE) term.")
    w_dice: float = Field(1.0, ge=0, description="Weight of the Dice term.")
    batch_dice: bool = Field(True, description="Dice over the whole batch (True) or per sample (False).")
    smooth_nr: float = Field(0.0, ge=0, description="Dice numerator smoothing.")
    smooth_dr: float = Field(1e-5, gt=0, description="Dice denominator smoothing.")
    squared_pred: bool = Field(False, description="Squared terms in the Dice denominator.")
    blob_weight: float = Field(
        0.0, ge=0, description="Weight of the per-lesion (blob) term added to the loss; focal_dice_blob with 0 uses 1."
    )


class OptimConfig(Section):
    """AdamW and its learning-rate schedule."""

    lr: float = Field(3e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    schedule: Literal["poly", "cosine"] = Field("poly", description="Per-step decay to zero.")


class TrainConfig(Section):
    """Training loop settings."""

    epochs: int = Field(50, gt=0, description="Passes over the training cases (at most, with max_minutes).")
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="Wall-clock budget: the epochs that fit (estimated from those done, re-estimated every epoch), "
        "the learning-rate schedule stretched to end there, a final validation; null = run all epochs.",
    )
    batch_size: int = Field(2, gt=0, description="Volumes per step (each gives samples_per_volume patches).")
    val_every: int = Field(5, gt=0, description="Validate every N epochs (and after the last).")
    select_metric: Literal["val_lesion_f1", "val_lesion_recall", "val_dice"] = Field(
        "val_lesion_f1", description="Metric that picks the best checkpoint."
    )
    seed: int = Field(0, description="Seed for python, numpy and torch.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when available.")
    checkpoint_every_steps: int | None = Field(
        100,
        gt=0,
        description="Also write last.pt (with everything to resume) every N steps inside an epoch; it is always "
        "written at each epoch end. null = epoch ends only.",
    )
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto",
        description="Mixed precision: auto = bf16 on GPUs that have it, else fp16 with a GradScaler; on the CPU bf16 "
        "where it is native (AVX512-BF16, AMX), else float32.",
    )
    compile: bool = Field(
        False, description="torch.compile the network (GPU: faster steps after a compile of a minute or more)."
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto",
        description="channels_last_3d memory format for network and inputs, with instance norms that keep it "
        "(medseg.nn.norms; the same function and state dict): auto = on CPU (oneDNN's 3D convolutions, above all "
        "the 1-channel ones at full resolution, run faster, and no layout copies around the norms: 0.73-0.81x the "
        "float32 UNet step of benchmarks/train_step.py in the default layout), off on CUDA (not measured there); "
        "true/false force it.",
    )
    grad_clip: float | None = Field(
        None, gt=0, description="Clip the gradient norm to this value (nnU-Net uses 12); null = no clipping."
    )
    max_nonfinite_steps: int = Field(
        5, gt=0, description="A NaN/Inf loss skips its step; this many in a row abort training."
    )
    early_stop_patience: int | None = Field(
        None, gt=0, description="Stop after this many validations without a better select_metric; null = never."
    )
    deterministic: bool = Field(False, description="Deterministic algorithms (reproducible, slower on GPU).")
    output_dir: Path = Field(
        Path("runs"), description="Run folders are created here (relative to the working directory)."
    )
    init_from: str | None = Field(
        None,
        description="Fine-tune: start from this model's weights instead of a random initialisation: a checkpoint "
        "(best.pt/last.pt), a run folder (its best.pt; relative to the working directory) or an MLflow model "
        "(runs:/<id>/model, models:/<name>/<version>, in the store this config trains into). Tensors are matched by "
        "name and shape; the first layer adapts to other input channels; init_report.txt in the run folder lists "
        "what was loaded and skipped. --resume continues from the run's own last.pt, never from this.",
    )
    init_new_channels: Literal["zero", "mean"] = Field(
        "zero",
        description="init_from with an input channel the source model lacks: its first-layer kernels start at zero "
        "(the new channel changes nothing until training moves them) or at the mean of the source's kernels over its "
        "channels.",
    )
    freeze_encoder_epochs: int = Field(
        0,
        ge=0,
        description="init_from: keep the encoder's parameters fixed for the first N epochs, then train everything "
        "(unet: the down path and the bottom; dynunet: input block, down-sampling blocks and bottleneck; segresnet: "
        "its encoder).",
    )
    init_keep_preprocessing: bool = Field(
        False,
        description="init_from: take the source model's spacing, normalisation, background and (for channels it "
        "has) CT statistics and nyul landmarks instead of this config's preprocess keys; false = this config's, "
        "with one warning line naming each difference.",
    )

    @model_validator(mode="after")
    def _init_options(self) -> TrainConfig:
        if self.init_from is None:
            for key, default in (("freeze_encoder_epochs", 0), ("init_keep_preprocessing", False)):
                if getattr(self, key) != default:
                    raise ValueError(f"{key} needs init_from (the model to fine-tune); set train.init_from")
        return self


class InferenceConfig(Section):
    """Sliding-window inference and the operating point."""

    roi_size: IntTriple | None = Field(
        None, description="Window size; null = the (planned) sampling.patch_size.", json_schema_extra=PLANNED
    )
    overlap: float = Field(0.5, ge=0, lt=1, description="Window overlap.")
    sw_batch_size: int = Field(4, gt=0, description="Windows per forward pass.")
    blend: Literal["gaussian", "constant"] = Field("gaussian", description="Window blending.")
    tta: bool = Field(False, description="Mirror test-time augmentation: mean logits over all 8 flips (8x the cost).")
    amp: Literal["auto", "on", "off"] = Field(
        "auto",
        description="bf16 autocast: auto = on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), off = float32.",
    )
    threshold: float = Field(0.5, gt=0, lt=1, description="Probability threshold for the mask.")
    min_lesion_mm3: float = Field(0.0, ge=0, description="Predicted lesions smaller than this are dropped.")
    fill_holes: bool = Field(
        False,
        description="Fill cavities enclosed by a predicted lesion (scipy binary_fill_holes, as MONAI FillHoles), "
        "before min_lesion_mm3: for lesions that are solid by definition (BraTS whole tumour).",
    )


class EvalConfig(Section):
    """Lesion matching rule used in validation and evaluation."""

    matching: Literal["overlap", "iou", "dsc"] = Field("overlap", description="Lesion matching rule.")
    match_threshold: float | None = Field(
        None, ge=0, le=1, description="iou/dsc threshold; null = 0.5 (iou), 0.1 (dsc)."
    )
    connectivity: Literal[6, 18, 26] = Field(26, description="Voxel connectivity of a lesion.")
    one_to_one: bool = Field(
        False,
        description="Match each lesion to at most one lesion (Hungarian on IoU, as panoptica and picai_eval) instead "
        "of many-to-one.",
    )


class TrackingConfig(Section):
    """MLflow tracking."""

    enabled: bool = Field(True, description="Log to MLflow.")
    uri: str | None = Field(
        None,
        description="Tracking URI; null = $MLFLOW_TRACKING_URI, else the SQLite store runs/mlflow.db when "
        "train.output_dir is runs/<name> (one store for every shipped config), else "
        "<output_dir>/mlflow.db.",
    )
    experiment: str = Field("medseg", description="Experiment name.")
    register_model: str | None = Field(
        None,
        description="Register best.pt in the MLflow model registry under this name (predict models:/NAME/VERSION).",
    )
    run_name: str | None = Field(
        None,
        description="MLflow run name; null = <network>-<loss>-<sampling>-s<seed> (e.g. unet-focal_dice-lesion-s0).",
    )
    parent_run_id: str | None = Field(
        None, description="Nest this run under that MLflow run (an ablation's or a cross-validation's parent run)."
    )


def lesion_classes(data: DataConfig) -> list[tuple[str, tuple[int, ...] | None]]:
    """(name, label values) per network output: ``data.lesion_classes``, else one class
    ``lesion`` made of ``data.lesion_labels`` (None = every non-zero value)."""
    if data.lesion_classes:
        return [(name, tuple(values)) for name, values in data.lesion_classes.items()]
    return [("lesion", data.lesion_labels)]


def all_lesion_values(data: DataConfig) -> tuple[int, ...] | None:
    """Every label value that is lesion in some class (None = every non-zero value)."""
    if data.lesion_classes:
        return tuple(sorted({v for values in data.lesion_classes.values() for v in values}))
    return data.lesion_labels


class ExperimentConfig(Section):
    """The whole experiment."""

    data: DataConfig
    preprocess: PreprocessConfig = PreprocessConfig()
    sampling: SamplingConfig = SamplingConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    inference: InferenceConfig = InferenceConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _classes(self) -> ExperimentConfig:
        classes = self.data.lesion_classes
        if classes is not None:
            if self.data.lesion_labels:
                raise ValueError(
                    "data.lesion_labels and data.lesion_classes: set one of them (lesion_classes for several outputs)"
                )
            if not classes or any(not values for values in classes.values()):
                raise ValueError("data.lesion_classes: give each class a non-empty list of label values")
            bad = [name for name in classes if not name.replace("_", "").isalnum()]
            if bad:
                raise ValueError(
                    f"data.lesion_classes: class name {bad[0]!r} must be letters, digits and _ (it names output files)"
                )
            if len(classes) > 1 and self.sampling.strategy == "voxel":
                raise ValueError(
                    "sampling.strategy 'voxel' samples one label channel; use 'lesion' with several lesion_classes"
                )
        return self


def run_name(cfg: ExperimentConfig) -> str:
    """``tracking.run_name``, else ``<network>-<loss>-<sampling>-s<seed>``."""
    return cfg.tracking.run_name or f"{cfg.model.name}-{cfg.loss.name}-{cfg.sampling.strategy}-s{cfg.train.seed}"
