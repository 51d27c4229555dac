"""The four layer types of a DCGMM; every one maps NHWC to NHWC."""

from dcgmm.layers.base import Layer, Shape, TrainableLayer
from dcgmm.layers.classifier import ClassifierFeed, LinearClassifier
from dcgmm.layers.folding import Folding
from dcgmm.layers.gmm import GMM, GMMScores
from dcgmm.layers.pooling import MaxPooling

__all__ = [
    "GMM",
    "ClassifierFeed",
    "Folding",
    "GMMScores",
    "Layer",
    "LinearClassifier",
    "MaxPooling",
    "Shape",
    "TrainableLayer",
]
