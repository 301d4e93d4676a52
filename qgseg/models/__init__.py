"""Segmentation networks (MONAI) behind one factory."""
from .factory import SEGMENTERS, build_model, build_segmenter, count_parameters, load_local_weights

__all__ = ["SEGMENTERS", "build_model", "build_segmenter", "count_parameters", "load_local_weights"]
