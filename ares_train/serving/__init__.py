"""Sampling through a serving engine (vLLM, transformers serve, any OpenAI-compatible completions server).

- `client.py`   the `openai` SDK calls: concurrency, retries, --log, errors, adapting to each server
- `launch.py`   --serve-cmd: start the engine on a pinned view of the checkpoint, wait, verify, stop
- `rollout.py`  rationales rows from the server's samples (prompt ids built locally, stop tokens kept)
- `session.py`  `ares-train rollout --engine server` end to end (sample everything, then publish)
"""
