"""Streaming exports write exactly the bytes the former in-memory exports wrote.

The fingerprints below were recorded from the in-memory implementation (before the exports streamed) on
`build_lineage` fixtures; a fingerprint is sha256(kind + data file), so equal fingerprints mean identical
Arrow files, and an unchanged export of an old version is reused, not republished. If the lineage fixture
or the prompt format changes on purpose, re-record them (same calls, print `v.fingerprint`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ares_data import export
from ares_data.export import export_dpo, export_prm, export_sft
from ares_data.store import Store, Version
from ares_data.testing.lineage import build_lineage

CASES: dict[str, Callable[[Store, str], Version]] = {
    "sft": lambda s, o: export_sft(s, "fixes", o),
    "sft-noimg": lambda s, o: export_sft(s, "fixes", o, images=False),
    "sft-chat": lambda s, o: export_sft(s, "fixes", o, conversational=True),
    "prm": lambda s, o: export_prm(s, "scores", o),
    "prm-0.7": lambda s, o: export_prm(s, "scores", o, threshold=0.7),
    "dpo": lambda s, o: export_dpo(s, "scores", o),
    "dpo-noimg-margin": lambda s, o: export_dpo(s, "scores", o, images=False, min_margin=0.1),
    "dpo-answer": lambda s, o: export_dpo(s, "scores", o, pair_by="answer"),
}
_FAIL = {"skipped_failed": 3}
SMALL = {  # build_lineage(n_problems=6, k=3)
    "sft": ("sft", 15, _FAIL, "fe59b17987bf69a78227f81dd4b35abb259e1e0359ceaf943bfb8c8e21b6a8d8"),
    "sft-noimg": ("sft-text", 15, _FAIL, "c51ba2153026cf8b54bf5e3c9b1a68ae8414bef757837405b71546ad32a8bd90"),
    "sft-chat": ("sft-chat", 15, _FAIL, "7efeb0605a959dc744b7ecc148bdf5fb6514f43a333b3e5ae090efc11715d6a7"),
    "prm": ("prm", 16, {"skipped_failed": 2},
            "f79e0a3b2190ce7467ec3d0d299e61c28701ef684f6f7c2952ab68d6b48f12d8"),
    "prm-0.7": ("prm", 16, {"skipped_failed": 2},
                "c28d53e2503bb8dab1b7c2c65e2ecb6ec7d0a4462a8b9b0cb2317ad1d07db97b"),
    "dpo": ("dpo", 5, {"skipped_failed": 2, "no_pair": 1},
            "adad6e940eac711b109175f6de717e8b9dc04a8e75d2c1a01c34f2d56858be46"),
    "dpo-noimg-margin": ("dpo-text", 5, {"skipped_failed": 2, "no_pair": 1},
                         "c87e978c51941cb8a5b2a50c40593df98ddda51b9e12291898f6fa0fa5fcc84f"),
    "dpo-answer": ("dpo", 5, {"skipped_failed": 2, "no_pair": 1},
                   "adad6e940eac711b109175f6de717e8b9dc04a8e75d2c1a01c34f2d56858be46"),
}
_FAIL = {"skipped_failed": 240}
_PAIRS = {"skipped_failed": 171, "no_pair": 57}
LARGE = {  # build_lineage(n_problems=400, k=3): 1200 score rows, more than one 1000-row Arrow batch
    "sft": ("sft", 960, _FAIL, "06ca17e2b93bdaad1fa2002486eb19f9ffeb5cf0488fc75fb3ed117dff847751"),
    "sft-noimg": ("sft-text", 960, _FAIL, "c27d7c6053db8b3372c98467730b33b28daa47e2435668b9dd8281f890149be6"),
    "sft-chat": ("sft-chat", 960, _FAIL, "d9cb4543e65755e581cc5fb6b18f25b4fb31605c103f4f0ec8cdcc6c64083c01"),
    "prm": ("prm", 1029, {"skipped_failed": 171},
            "39fc9c1911b4479574da8239548798acfbf5f9786dac720870ff3e765a21f709"),
    "prm-0.7": ("prm", 1029, {"skipped_failed": 171},
                "cb739612d7b134d7232162bb64e9210d84b25d0f25646491f7aebfdd542d86bd"),
    "dpo": ("dpo", 343, _PAIRS, "b6c66e2be1920f26b39523c6e098428d3064ddb18f1cd9413730e023dada5f67"),
    "dpo-noimg-margin": ("dpo-text", 343, _PAIRS,
                         "ae90a1c51f077d9b1053ef64e389e24e726c17f05521d3dfbbee79569be51da3"),
    "dpo-answer": ("dpo", 343, _PAIRS, "b6c66e2be1920f26b39523c6e098428d3064ddb18f1cd9413730e023dada5f67"),
}


def _check(store: Store, expected: dict) -> None:
    for i, (case, (kind, rows, counts, fingerprint)) in enumerate(expected.items()):
        v = CASES[case](store, f"out{i}")
        got = (v.kind, v.manifest["rows"], v.manifest["counts"], v.fingerprint)
        assert got == (kind, rows, counts, fingerprint), case
        assert CASES[case](store, f"out{i}").reused, case  # the same export again reuses the version


def test_streamed_exports_match_the_in_memory_ones(tmp_path: Path) -> None:
    store = Store(tmp_path / "small")
    build_lineage(store)
    _check(store, SMALL)


@pytest.mark.parametrize("batch_rows", [None, 7])
def test_streamed_exports_match_across_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               batch_rows: int | None) -> None:
    """More rows than one output batch; with 7-row source batches every boundary case is crossed too."""
    if batch_rows is not None:
        if not hasattr(export, "BATCH_ROWS"):
            pytest.skip("the in-memory exports read no batches")
        monkeypatch.setattr(export, "BATCH_ROWS", batch_rows)
    store = Store(tmp_path / "large")
    build_lineage(store, n_problems=400, k=3)
    _check(store, LARGE)


def test_no_failures_and_no_rationales_parent(tmp_path: Path) -> None:
    """Without failures the manifest has no zero counts; without a rationales parent the DPO texts are the
    joined sentences."""
    from ares_data.testing.lineage import problem_rows, rationale_rows, score_rows

    store = Store(tmp_path)
    problems = store.publish("sqa", "problems", problem_rows(4))
    rats = rationale_rows(4, 2)
    scores = store.publish("scores", "scores", score_rows(rats, fail_every=0), parents=[problems])
    prm = export_prm(store, "scores", "prm")
    assert (prm.manifest["rows"], prm.manifest["counts"]) == (8, {})
    dpo = export_dpo(store, "scores", "dpo", images=False)
    assert (dpo.manifest["rows"], dpo.manifest["counts"]) == (4, {})
    joined = {r["rationale_id"]: " ".join(r["sentences"]) for r in scores.load()}
    for row in dpo.load():
        assert row["chosen"] == joined[row["chosen_rationale_id"]] != row["rejected"]
