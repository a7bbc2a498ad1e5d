"""Calibration data and the statistics activation-based methods read, with their verified cache.

- ``sets``: calibration sets (the family's task, s1K, any file) as texts
- ``activations``: AIM's per-channel input activation means, one decoder layer at a time
- ``sensitivity``: Sens-Merging's layer sensitivities and logit distances
- ``cache``: statistics cached next to the checkpoints, keyed by a fingerprint of the weights
"""

from l2s_kit.merging.calibration.sets import PARTS, CalibrationError, CalibrationSpec, texts

__all__ = ["PARTS", "CalibrationError", "CalibrationSpec", "texts"]
