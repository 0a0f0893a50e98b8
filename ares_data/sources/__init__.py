"""Problem sources: one small module per input format, sharing `base.ingest` for the bookkeeping.

from ares_data.sources import ingest, open_scienceqa
version = ingest(Store(), "sqa", open_scienceqa(Path("ScienceQA/data")), splits=["train"])
"""

from __future__ import annotations

from .aokvqa import AOKVQAFile
from .base import ProblemSource, Where, hash_files, ingest, problem_row
from .jsonl import JsonlFile, parse_mapping
from .scienceqa import ScienceQAFiles, ScienceQAParquet, open_scienceqa

__all__ = [
    "AOKVQAFile",
    "JsonlFile",
    "ProblemSource",
    "ScienceQAFiles",
    "ScienceQAParquet",
    "Where",
    "hash_files",
    "ingest",
    "open_scienceqa",
    "parse_mapping",
    "problem_row",
]
