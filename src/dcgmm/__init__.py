"""Deep convolutional Gaussian mixture models of images (Gepperth & Pfuelb), in PyTorch."""

from dcgmm._version import __version__
from dcgmm.evaluation.scores import Evaluation, LayerScores, evaluate
from dcgmm.exceptions import (
    CheckpointError,
    DataError,
    NumericalWarning,
    OutputError,
    SpecError,
)
from dcgmm.generation.inpainting import inpaint, make_mask, variants
from dcgmm.generation.sampling import SamplingConfig, sample
from dcgmm.generation.sharpening import Sharpening
from dcgmm.interfaces.image_model import DensityModel, ImageModel, as_image_model
from dcgmm.interfaces.runs import Run, load_run
from dcgmm.io.data import Dataset, load_dataset
from dcgmm.layers import GMM, Folding, Layer, LinearClassifier, MaxPooling, TrainableLayer
from dcgmm.model import DCGMM
from dcgmm.spec import PRESETS, format_spec, parse_spec
from dcgmm.training.annealing import AnnealingConfig, SingleExpSchedule
from dcgmm.training.checkpoint import load_model
from dcgmm.training.config import TrainConfig
from dcgmm.training.trainer import Trainer
from dcgmm.training.watchdog import NumericalError

__all__ = [
    "DCGMM",
    "GMM",
    "PRESETS",
    "AnnealingConfig",
    "CheckpointError",
    "DataError",
    "Dataset",
    "DensityModel",
    "Evaluation",
    "Folding",
    "ImageModel",
    "Layer",
    "LayerScores",
    "LinearClassifier",
    "MaxPooling",
    "NumericalError",
    "NumericalWarning",
    "OutputError",
    "Run",
    "SamplingConfig",
    "Sharpening",
    "SingleExpSchedule",
    "SpecError",
    "TrainConfig",
    "TrainableLayer",
    "Trainer",
    "__version__",
    "as_image_model",
    "evaluate",
    "format_spec",
    "inpaint",
    "load_dataset",
    "load_model",
    "load_run",
    "make_mask",
    "parse_spec",
    "sample",
    "variants",
]
