"""Clear errors when the [train] extra is missing."""

from __future__ import annotations

import importlib.util

from ares_data.errors import DependencyError


def require_train_extra() -> None:
    missing = [m for m in ("torch", "transformers", "trl", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        raise DependencyError(
            f"the trainer needs {', '.join(missing)}, which are not installed",
            hint="pip install 'ares-toolkit[train]' (CPU: pip install torch==2.13.0 first)",
        )
