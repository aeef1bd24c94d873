"""Depth and thermal synthesis from RGB frames (batched, device-aware)."""

from encoders.synthesis.depth import DepthSynthesizer, glpn_nyu_config, random_depth_model
from encoders.synthesis.thermal import MunitGenerator, MunitParams, ThermalSynthesizer, random_thermal_generator

__all__ = ["DepthSynthesizer", "MunitGenerator", "MunitParams", "ThermalSynthesizer", "glpn_nyu_config",
           "random_depth_model", "random_thermal_generator"]
