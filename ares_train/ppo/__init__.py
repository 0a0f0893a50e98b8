"""The ARES RL stage: PPO with a reward at the end of every scored sentence, and critic-free GRPO.

- `rewards.py`   where a sentence's reward lands: character offsets -> the token holding its last character
- `data.py`      rationales + scores -> rollouts (prompt and response ids, per-token sentence rewards)
- `algorithm.py` the PPO arithmetic: per-token KL and rewards, GAE, clipped policy + value loss
- `value.py`     the value model (scalar head on the policy's backbone)
- `trainer.py`   the train loop over buffers of dataset rollouts (TRL's PPOTrainer set-up)
- `run.py`       `ares-train ppo` as a library call: config, loading, reference, saving
- `trl_base.py`  the one module that imports TRL's PPO internals
- `grpo.py`, `grpo_config.py`, `grpo_trainer.py`, `grpo_run.py`: `ares-train grpo` (group advantages, its
  settings, the trainer without a value model, the run through `run.run_rl`)
"""
