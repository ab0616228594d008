"""FAMES calibration (Ren et al., Algorithm 1): the activation quantile search, then learnable weight clipping, with
the AppMuls in the loop; swappable calibrators with ``calibrate(model, data) -> CalibrationReport``."""

from fames.method.calibrate.calibrator import STALE_CORRECTIONS, FamesCalibrator, calibrate
from fames.method.calibrate.config import CalibrationConfig, CalibrationReport, LayerCalibration
from fames.method.calibrate.data import CalibrationData, calibration_data
from fames.method.calibrate.lwc import LearnableWeightClipping
from fames.method.calibrate.quantile import QuantileSearch
from fames.method.calibrate.reference import ReferenceState

__all__ = [
    "STALE_CORRECTIONS",
    "CalibrationConfig",
    "CalibrationData",
    "CalibrationReport",
    "FamesCalibrator",
    "LayerCalibration",
    "LearnableWeightClipping",
    "QuantileSearch",
    "ReferenceState",
    "calibrate",
    "calibration_data",
]
