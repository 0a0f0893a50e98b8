"""ares_data: build versioned datasets of ARES rationales, teacher scores and corrections.

This package never imports torch; the trainer lives in `ares_train`.
"""

__version__ = "0.1.0"
