"""The training engine: one loop (:class:`BaseTrainer`) extended by small subclasses."""
from .checkpoint import load_checkpoint, save_checkpoint
from .ema import EMA
from .trainer import BaseTrainer, FitResult, Interrupted

__all__ = ["BaseTrainer", "FitResult", "Interrupted", "EMA", "load_checkpoint", "save_checkpoint"]
