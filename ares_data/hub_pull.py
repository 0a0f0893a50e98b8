"""`pull`: bring a dataset pushed by `ares_data.hub.push` back into a store, fingerprints verified.

Every ARES config of the repo (`ares/<config>/manifest.json` + `data/<config>/*.parquet`) is published,
parents first, so the lineage is linked again locally; the content fingerprint recorded at push time is
checked on the downloaded Parquet before publishing and on the published Arrow after (see `ares_data.hub`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import AresError
from .hub import _RESERVED, HubError, _api, content_fingerprint, endpoint, hub_errors, parse_repo
from .stats import read_table
from .store import Store, Version


def _order(manifests: dict[str, dict[str, Any]]) -> list[str]:
    """Config names, parents before children."""
    by_ref = {m["name"] + "@" + str(m["version"]): c for c, m in manifests.items()}
    done: list[str] = []

    def visit(cfg: str, stack: tuple[str, ...]) -> None:
        if cfg in done or cfg in stack:
            return
        for p in manifests[cfg].get("parents", []):
            if p["ref"] in by_ref:
                visit(by_ref[p["ref"]], (*stack, cfg))
        done.append(cfg)

    for cfg in sorted(manifests, key=lambda c: not manifests[c].get("hub", {}).get("default")):
        visit(cfg, ())
    return done


def pull(store: Store, spec: str, name: str | None = None) -> list[Version]:
    """Download OWNER/NAME[@REV] and publish every ARES config in it (parents first); the default last."""
    from huggingface_hub import snapshot_download

    repo, rev = parse_repo(spec)
    token = os.environ.get("HF_TOKEN") or None
    _api(token)  # refuses offline mode
    with tempfile.TemporaryDirectory(prefix="ares-pull-") as tmp, hub_errors("pull", repo):
        local = Path(snapshot_download(repo, repo_type="dataset", revision=rev or "main", token=token,
                                       endpoint=endpoint(), local_dir=tmp,
                                       allow_patterns=["ares/*/manifest.json", "data/*/*.parquet"]))
        found = sorted(local.glob("ares/*/manifest.json"))
        manifests = {p.parent.name: json.loads(p.read_text()) for p in found}
        if not manifests:
            raise HubError(f"{repo}@{rev or 'main'} has no ares/<config>/manifest.json "
                           "(not pushed by ares-data)")
        published: dict[str, Version] = {}
        for cfg in _order(manifests):
            published[cfg] = _publish_pulled(store, repo, rev, local, cfg, manifests, published, name)
    return list(published.values())


def _publish_pulled(store: Store, repo: str, rev: str | None, local: Path, cfg: str,
                    manifests: dict[str, dict[str, Any]], published: dict[str, Version],
                    name: str | None) -> Version:
    m = manifests[cfg]
    files = sorted((local / "data" / cfg).glob("*.parquet"))
    if not files:
        raise HubError(f"{repo}: config {cfg} has no Parquet files")
    table = pa.concat_tables([pq.read_table(f) for f in files])
    expected = m.get("content_fingerprint")
    got = content_fingerprint(m["kind"], table)
    if got != expected:
        raise HubError(f"{repo}: config {cfg}: content fingerprint mismatch (manifest {str(expected)[:16]}…, "
                       f"downloaded {got[:16]}…); nothing was published")
    by_ref = {f"{mm['name']}@{mm['version']}": c for c, mm in manifests.items()}
    parents = [published[by_ref[p["ref"]]] for p in m.get("parents", []) if by_ref.get(p["ref"]) in published]
    extra = {k: v for k, v in m.items() if k not in _RESERVED | {"content_fingerprint", "hub"}}
    extra["pulled_from"] = {"repo": repo, "revision": rev or "main", "config": cfg,
                            "ref": f"{m['name']}@{m['version']}",
                            "fingerprint": m["fingerprint"], "content_fingerprint": expected,
                            "command": m.get("command"), "parents": m.get("parents", [])}
    target = name if (name and m.get("hub", {}).get("default")) else m["name"]
    if target == m["name"] and (original := _local_original(store, m)) is not None:
        return original  # pulled back into the store it was pushed from: the very version is here
    with store.writer(target, m["kind"], parents=parents, params=m.get("params") or {}, extra=extra) as w:
        w.write_table(table)
        for key, n in (m.get("counts") or {}).items():
            w.count(key, n)
    version = w.result
    if content_fingerprint(version.kind, read_table(version)) != expected:
        raise HubError(f"{version.ref}: content changed while publishing (fingerprint mismatch)")
    return version


def _local_original(store: Store, m: dict[str, Any]) -> Version | None:
    """The store's own `name@version` when it is byte-identical to the pushed one (same store fingerprint)."""
    try:
        v = store.resolve(f"{m['name']}@{m['version']}")
    except AresError:
        return None
    if v.fingerprint != m["fingerprint"]:
        return None
    v.reused = True
    return v
