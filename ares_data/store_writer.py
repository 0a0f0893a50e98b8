"""`Writer`: streams rows of one dataset kind into an Arrow file in a staging folder (see `Store.writer`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .integrity import DATA_FILE


@dataclass
class Writer:
    """Streams rows of one kind into a temporary folder; `Store.writer` publishes it on success."""

    kind: str
    tmp: Path
    rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    _writer: Any = None
    _finalized: bool = False

    def __post_init__(self) -> None:
        from datasets.arrow_writer import ArrowWriter

        from .schema import features_for  # imports `datasets`: kept off the CLI's start-up path

        self.features = features_for(self.kind)
        self._writer = ArrowWriter(features=self.features, path=str(self.tmp / DATA_FILE))

    @property
    def batch_size(self) -> int:
        """Rows per Arrow record batch that row-by-row writes produce (bulk writers can match it)."""
        return self._writer.writer_batch_size

    def write(self, row: dict[str, Any]) -> None:
        try:
            example = self.features.encode_example(row)
        except Exception as exc:  # noqa: BLE001 - re-raised with the row number
            raise InputError(f"cannot encode row for kind '{self.kind}': {exc}", row=self.rows) from exc
        self._writer.write(example)
        self.rows += 1

    def write_all(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def write_table(self, table: Any) -> None:
        """Bulk-write a pyarrow Table already in the kind's columns (e.g. read back from Parquet)."""
        try:
            table = table.select(list(self.features)).cast(self.features.arrow_schema)
        except Exception as exc:  # noqa: BLE001 - missing column or incompatible type
            raise InputError(f"table does not fit kind '{self.kind}': {exc}", row=self.rows) from exc
        self._writer.write_table(table)
        self.rows += table.num_rows

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def _finalize(self) -> None:
        if self._finalized:
            return
        self._finalized = True
        self._writer.finalize()
        self._writer.close()
        state = {
            "_data_files": [{"filename": DATA_FILE}],
            "_fingerprint": uuid.uuid4().hex[:16],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        (self.tmp / "state.json").write_text(json.dumps(state, indent=2))
        info = {"citation": "", "description": "", "features": self.features.to_dict(), "homepage": "",
                "license": ""}
        (self.tmp / "dataset_info.json").write_text(json.dumps(info, indent=2))
