"""Segmentation methods: supervised baseline and semi-supervised methods."""
from .base import Batch, SegmentationMethod, Supervised, build_supervised_loss

METHODS = {"supervised": Supervised}

__all__ = ["Batch", "SegmentationMethod", "Supervised", "build_supervised_loss", "METHODS"]
