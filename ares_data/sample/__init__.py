"""A small original sample in the official ScienceQA file layout, shipped with the package.

`SAMPLE_DIR` holds `problems.json`, `pid_splits.json` and `images/<split>/<pid>/image.png` (60 problems:
40 train, 10 val, 10 test; 12 with images). `RATIONALES` is a JSONL file of model-style rationales for the
train problems, some correct and some with realistic flaws (wrong claims, repeated sentences, unfinished
last sentences, missing spaces after periods).

    ares-data ingest scienceqa "$(python -c 'import ares_data.sample as s; print(s.SAMPLE_DIR)')" -o sqa
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR: Path = Path(__file__).parent / "scienceqa"
RATIONALES: Path = Path(__file__).parent / "rationales.jsonl"

__all__ = ["SAMPLE_DIR", "RATIONALES"]
