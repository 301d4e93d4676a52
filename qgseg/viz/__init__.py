"""Plots: training curves, overlays, quality scatter and reliability plots."""
