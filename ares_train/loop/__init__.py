"""`ares-train loop`: rounds of rollout -> teacher -> PPO / SFT, resumable.

- `config.py`  the [loop] settings and the per-stage config tables of a --config file
- `stages.py`  one function per stage kind (rollout, score/correct, ppo, sft, eval)
- `run.py`     the run folder, run.json, the lock, scheduling and resuming
"""
