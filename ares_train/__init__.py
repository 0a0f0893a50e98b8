"""ares_train: rollout, PPO with sentence-level rewards, and SFT on corrections (needs the [train] extra).

Reads and writes datasets only through `ares_data.store`.
"""

__version__ = "0.1.0"
