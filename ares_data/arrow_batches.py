"""Arrow helpers for streaming a memory-mapped table into a `Store.writer` (used by the exports)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa


def take_rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """`table.take(rows)`, one record batch at a time: a take over a many-chunk table would first
    concatenate every chunk (a copy of the whole column)."""
    batches = table.to_batches()
    bounds = np.cumsum([0] + [b.num_rows for b in batches])
    order = np.argsort(rows, kind="stable")
    wanted = rows[order]
    cuts = np.searchsorted(wanted, bounds)
    parts = [batches[c].take(pa.array(wanted[cuts[c]:cuts[c + 1]] - bounds[c]))
             for c in np.flatnonzero(cuts[1:] > cuts[:-1])]
    found = pa.Table.from_batches(parts, schema=table.schema).combine_chunks()
    return found.take(pa.array(np.argsort(order, kind="stable")))


class Rebatch:
    """Writes tables in record batches of exactly `size` rows, as the row-by-row writer cuts them."""

    def __init__(self, w: Any, size: int) -> None:
        self.w, self.size, self.parts, self.rows = w, size, [], 0

    def add(self, table: pa.Table) -> None:
        self.parts.append(table)
        self.rows += table.num_rows
        if self.rows >= self.size:
            table = pa.concat_tables(self.parts)
            cut = self.rows - self.rows % self.size
            for start in range(0, cut, self.size):
                self.w.write_table(table.slice(start, self.size))
            self.parts, self.rows = [table.slice(cut)], self.rows - cut

    def flush(self) -> None:
        if self.rows:
            self.w.write_table(pa.concat_tables(self.parts))
        self.parts, self.rows = [], 0
