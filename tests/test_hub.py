"""`ares-data push / pull` with the real huggingface_hub client against the fake Hub on loopback."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ares_data.cards import card_metadata
from ares_data.hub import content_fingerprint
from ares_data.stats import read_table
from ares_data.store import Store
from ares_data.testing.fake_hub import FakeHub
from ares_data.testing.lineage import build_lineage, score_rows
from tests.helpers import data

TOKEN = "hf_fakeTOKENvalue1234567890"
REPO = "me/ares-scores"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import huggingface_hub.constants as constants

    # the fake Hub speaks the LFS upload protocol, not Xet; conftest sets offline mode for everything else
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub(token=TOKEN) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


@pytest.fixture
def lineage(store_dir: Path) -> dict:
    return build_lineage(Store(store_dir))


def _push(*extra: str) -> dict:
    r = data(["push", "scores", "--repo", REPO, "--with-parents", "--json", *extra])
    assert r.exit_code == 0, r.output
    return r.json()


def test_push_uploads_parquet_card_manifests_and_tag(hub: FakeHub, lineage: dict) -> None:
    out = _push()
    repo = hub.repos[REPO]
    files = repo.files("v1")
    assert out["tag"] == "v1" and repo.tags["v1"] == out["commit"] == repo.branches["main"]
    assert set(files) == {
        ".gitattributes", "README.md", "assets/scores-scores.png",
        "ares/scores/manifest.json", "ares/rationales/manifest.json", "ares/problems/manifest.json",
        "data/scores/train-00000-of-00001.parquet", "data/rationales/train-00000-of-00001.parquet",
        "data/problems/train-00000-of-00001.parquet",
    }
    assert repo.commits[out["commit"]].message == "ares-data push scores@v1"
    # binary files went through the LFS batch + PUT path, each exactly once
    assert len(hub.lfs_uploads) == 4 == len(set(hub.lfs_uploads))
    table = pq.read_table(io.BytesIO(files["data/scores/train-00000-of-00001.parquet"]))
    assert table.num_rows == 18 and table.column("scores").to_pylist() == lineage["scores"].load()["scores"]
    manifest = json.loads(files["ares/scores/manifest.json"])
    assert manifest["fingerprint"] == lineage["scores"].fingerprint
    assert manifest["content_fingerprint"] == content_fingerprint("scores", table)
    meta = card_metadata(files["README.md"].decode())
    assert [c["config_name"] for c in meta["configs"]] == ["scores", "rationales", "problems"]
    assert f"{hub.url}/datasets/{REPO}/resolve/v1/assets/scores-scores.png" in files["README.md"].decode()
    for path, blob in files.items():  # the token is never written anywhere
        assert TOKEN.encode() not in blob, path


def test_failed_push_resumes_without_reuploading(hub: FakeHub, lineage: dict) -> None:
    hub.fail["commit"] = 1
    r = data(["push", "scores", "--repo", REPO])
    assert r.exit_code == 1 and "Error: push failed: the Hub answered 500" in r.stderr
    assert "re-run" in r.stderr
    assert TOKEN not in r.output
    uploaded = list(hub.lfs_uploads)
    assert len(uploaded) == 2  # scores shard + plot reached LFS storage before the commit failed
    assert "v1" not in hub.repos[REPO].tags
    r = data(["push", "scores", "--repo", REPO, "--json"])
    assert r.exit_code == 0, r.output
    assert hub.lfs_uploads == uploaded  # nothing sent twice
    assert hub.repos[REPO].tags["v1"] == r.json()["commit"]
    assert ("PUT", f"/lfs-upload/{uploaded[0]}") in hub.requests


def test_push_again_is_a_no_op_and_new_versions_get_their_own_tag(hub: FakeHub, lineage: dict,
                                                                   store_dir: Path) -> None:
    first = _push()
    commits = len(hub.repos[REPO].commits)
    again = _push()
    assert again["uploaded"] == [] and again["commit"] == first["commit"]
    assert len(hub.repos[REPO].commits) == commits and len(hub.lfs_uploads) == 4
    store = Store(store_dir)
    rows = score_rows([r for r in lineage["rationales"].load()], seed=1)
    v2 = store.publish("scores", "scores", rows, parents=[lineage["rationales"]])
    out = _push()
    assert out["tag"] == "v2" and v2.version == 2
    assert set(out["unchanged"]) >= {"data/problems/train-00000-of-00001.parquet",
                                     "data/rationales/train-00000-of-00001.parquet"}
    repo = hub.repos[REPO]
    shard = "data/scores/train-00000-of-00001.parquet"
    assert repo.files("v1")[shard] != repo.files("v2")[shard]  # the v1 tag still serves v1


def test_pushed_layout_loads_with_datasets(hub: FakeHub, lineage: dict, tmp_path: Path) -> None:
    _push()
    from datasets import Image, load_dataset
    from huggingface_hub import snapshot_download

    local = snapshot_download(REPO, repo_type="dataset", revision="v1", endpoint=hub.url, token=TOKEN,
                              local_dir=str(tmp_path / "copy"))
    scores = load_dataset(local, split="train")  # the default config
    assert scores["rationale_id"] == lineage["scores"].load()["rationale_id"]
    problems = load_dataset(local, "problems", split="train")
    assert isinstance(problems.features["image"], Image) and problems[0]["image"].size == (8, 8)


def test_load_dataset_by_tag_from_the_hub(hub: FakeHub, lineage: dict, store_dir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`load_dataset(repo, revision="v1")` itself, through datasets' Hub file system, gets exactly v1."""
    import datasets.config
    import huggingface_hub.constants as constants
    from datasets import load_dataset

    # both libraries read HF_ENDPOINT at import time; point them at the fake Hub for this test
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    template = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", hub.url)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    _push()
    rows = score_rows(list(lineage["rationales"].load()), seed=1)
    Store(store_dir).publish("scores", "scores", rows, parents=[lineage["rationales"]])
    _push()
    cache = str(tmp_path / "hf-cache")
    v1 = load_dataset(REPO, revision="v1", split="train", cache_dir=cache)
    v2 = load_dataset(REPO, revision="v2", split="train", cache_dir=cache)
    assert v1["scores"] == lineage["scores"].load()["scores"]
    assert v2["scores"] == Store(store_dir).load("scores@v2")["scores"] and v1["scores"] != v2["scores"]
    problems = load_dataset(REPO, "problems", revision="v1", split="train", cache_dir=cache)
    assert problems["problem_id"] == lineage["problems"].load()["problem_id"]


def test_pull_round_trip_verifies_fingerprints(hub: FakeHub, lineage: dict, tmp_path: Path) -> None:
    _push()
    other = tmp_path / "other-store"
    r = data(["pull", f"{REPO}@v1", "-o", "shared-scores", "--store", other, "--json"])
    assert r.exit_code == 0, r.output
    assert [v["ref"] for v in r.json()] == ["sqa@v1", "rats@v1", "shared-scores@v1"]
    store = Store(other)
    pulled = store.resolve("shared-scores")
    assert pulled.manifest["parents"][0]["ref"] == "rats@v1"  # lineage relinked locally
    assert store.parent_chain(pulled, "problems").ref == "sqa@v1"
    src = pulled.manifest["pulled_from"]
    assert src["repo"] == REPO and src["revision"] == "v1"
    assert src["fingerprint"] == lineage["scores"].fingerprint
    for kind, original in lineage.items():
        if kind == "corrections":
            continue
        local = store.parent_chain(pulled, kind)
        assert read_table(local).to_pylist() == read_table(original).to_pylist()
        assert content_fingerprint(kind, read_table(local)) == content_fingerprint(kind, read_table(original))
    assert pulled.manifest["teacher"] == lineage["scores"].manifest["teacher"]
    again = data(["pull", f"{REPO}@v1", "-o", "shared-scores", "--store", other, "--json"]).json()
    assert all(v["reused"] for v in again) and store.versions("shared-scores") == [1]


def test_pull_into_the_store_it_came_from_reuses_the_originals(hub: FakeHub, lineage: dict,
                                                                store_dir: Path) -> None:
    _push()
    before = {n: Store(store_dir).versions(n) for n in Store(store_dir).names()}
    r = data(["pull", f"{REPO}@v1", "--json"])
    assert r.exit_code == 0, r.output
    assert [(v["ref"], v["reused"]) for v in r.json()] == [("sqa@v1", True), ("rats@v1", True),
                                                           ("scores@v1", True)]
    assert {n: Store(store_dir).versions(n) for n in Store(store_dir).names()} == before
    r = data(["pull", f"{REPO}@v1", "-o", "copy", "--json"])  # a new name asks for a copy
    assert [v["ref"] for v in r.json()] == ["sqa@v1", "rats@v1", "copy@v1"]


def test_pull_refuses_tampered_data(hub: FakeHub, lineage: dict, tmp_path: Path) -> None:
    _push()
    repo = hub.repos[REPO]
    head = repo.commits[repo.tags["v1"]]
    path = "data/scores/train-00000-of-00001.parquet"
    table = pq.read_table(io.BytesIO(head.files[path].data))
    zeros = [[0.0] * len(s) for s in table.column("scores").to_pylist()]
    scores = pa.array(zeros, table.schema.field("scores").type)
    buf = io.BytesIO()
    pq.write_table(table.set_column(table.schema.get_field_index("scores"), "scores", scores), buf)
    head.files[path].data = buf.getvalue()
    r = data(["pull", f"{REPO}@v1", "--store", tmp_path / "s2"])
    assert r.exit_code == 1 and "content fingerprint mismatch" in r.stderr
    assert Store(tmp_path / "s2").versions("scores") == []  # nothing half-published


def test_hub_errors_are_clear(hub: FakeHub, lineage: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    r = data(["push", "scores", "--repo", REPO], env={"HF_TOKEN": "hf_wrong"})
    assert r.exit_code == 1 and "401" in r.stderr and "HF_TOKEN" in r.stderr and "hf_wrong" not in r.output
    r = data(["push", "scores", "--repo", REPO], env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert r.exit_code == 1 and "cannot talk to the Hub at http://127.0.0.1:9" in r.stderr
    r = data(["push", "scores", "--repo", "not a repo"])
    assert r.exit_code == 2 and "invalid Hub repo" in r.stderr
    r = data(["pull", "me/missing"])
    assert r.exit_code == 1 and "not found" in r.stderr
    r = data(["pull", "me/missing"], env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert r.exit_code == 1 and "cannot talk to the Hub at http://127.0.0.1:9" in r.stderr
    assert "upload" not in r.stderr, r.stderr  # a pull's hint is not about uploads
    _push()
    r = data(["pull", f"{REPO}@v9"])
    assert r.exit_code == 1 and "no such revision" in r.stderr
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    r = data(["pull", f"{REPO}@v1"])
    assert r.exit_code == 1 and "offline mode (HF_HUB_OFFLINE is set)" in r.stderr
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN")

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", "/nonexistent/token")
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", "/nonexistent/stored_tokens")
    r = data(["push", "scores", "--repo", REPO])
    assert r.exit_code == 1 and "no Hugging Face token" in r.stderr


def test_tag_with_other_content_is_refused(hub: FakeHub, lineage: dict, tmp_path: Path) -> None:
    _push()
    other = Store(tmp_path / "elsewhere")
    build_lineage(other, n_problems=3)
    r = data(["push", "scores", "--repo", REPO, "--store", other.root])
    assert r.exit_code == 1 and "tag v1 already exists" in r.stderr


def test_license_must_be_a_hub_license_id(hub: FakeHub, lineage: dict) -> None:
    # the real Hub refuses a commit whose README.md metadata does not validate (the fake does too)
    r = data(["push", "scores", "--repo", REPO, "--license", "Apache 2.0"])
    assert r.exit_code == 2 and "--license" in r.stderr and REPO not in hub.repos
    r = data(["push", "scores", "--repo", REPO, "--license", "my-own-license"])
    assert r.exit_code == 1 and "Invalid metadata in README.md" in r.stderr and "--license" in r.stderr
    assert hub.repos[REPO].tags == {}
    _push("--license", "MIT")  # Hub license ids are lower case
    assert "\nlicense: mit\n" in hub.repos[REPO].files("v1")["README.md"].decode()


@pytest.mark.parametrize("cmd", ["push", "pull", "card"])
def test_help(cmd: str) -> None:
    assert data([cmd, "--help"]).exit_code == 0


def test_real_pipeline_to_hub_and_back(hub: FakeHub, store_dir: Path, tmp_path: Path) -> None:
    """ingest -> import-rationales -> score/correct (offline teacher) -> export/stats/card -> push -> pull."""
    from ares_data.sample import RATIONALES, SAMPLE_DIR

    steps = [
        ["ingest", "scienceqa", SAMPLE_DIR, "-o", "sqa"],
        ["import-rationales", RATIONALES, "--problems", "sqa", "-o", "rats"],
        ["score", "rats", "--teacher", "reference", "-o", "scores", "--json"],
        ["correct", "rats", "--teacher", "reference", "-o", "fixes", "--json"],
        ["export", "dpo", "scores", "-o", "dpo", "--pair-by", "answer", "--json"],
        ["export", "sft", "fixes", "-o", "sft", "--json"],
    ]
    for args in steps:
        r = data(args)
        assert r.exit_code == 0, (args, r.output)
    st = data(["stats", "scores", "--by", "subject", "--json"]).json()
    assert st["rows"] == 97 and sum(g["rows"] for g in st["by"]["groups"]) == 97
    card = data(["card", "scores"]).stdout
    assert "provider `reference`" in card and "You are a careful teacher" in card
    r = data(["push", "dpo", "--repo", "me/sqa-dpo", "--with-parents", "--json"])
    assert r.exit_code == 0, r.output
    assert r.json()["configs"] == {"dpo": "dpo@v1", "scores": "scores@v1", "rationales": "rats@v1",
                                   "problems": "sqa@v1"}
    r = data(["pull", "me/sqa-dpo@v1", "--store", tmp_path / "mirror", "--json"])
    assert r.exit_code == 0, r.output
    mirror = Store(tmp_path / "mirror")
    for name in ("dpo", "scores", "rats", "sqa"):
        ours, theirs = Store(store_dir).resolve(name), mirror.resolve(name)
        assert read_table(ours).to_pylist() == read_table(theirs).to_pylist(), name
    dpo = mirror.resolve("dpo")
    assert dpo.kind == "dpo" and mirror.parent_chain(dpo, "problems").ref == "sqa@v1"


def test_large_data_is_sharded_and_private_repos(hub: FakeHub, lineage: dict, store_dir: Path,
                                                 tmp_path: Path) -> None:
    from datasets import load_dataset
    from huggingface_hub import snapshot_download

    from ares_data.hub import push

    res = push(Store(store_dir), "scores", "me/sharded", private=True, max_shard_bytes=2_000)
    shards = sorted(p for p in hub.repos["me/sharded"].files("v1") if p.startswith("data/scores/"))
    assert len(shards) > 1 and shards[0] == f"data/scores/train-00000-of-{len(shards):05d}.parquet"
    assert hub.repos["me/sharded"].private and res.tag == "v1"
    local = snapshot_download("me/sharded", repo_type="dataset", revision="v1", endpoint=hub.url, token=TOKEN,
                              local_dir=str(tmp_path / "copy"))
    assert load_dataset(local, split="train")["rationale_id"] == lineage["scores"].load()["rationale_id"]
    r = data(["pull", "me/sharded", "--store", tmp_path / "s"], env={"HF_TOKEN": ""})
    assert r.exit_code == 1 and "not found" in r.stderr  # private: invisible without the token
    r = data(["pull", "me/sharded", "--store", tmp_path / "s"])
    assert r.exit_code == 0, r.output


def test_bulk_write_table_checks_columns(store_dir: Path) -> None:
    from ares_data.errors import InputError

    store = Store(store_dir)
    good = build_lineage(store)["scores"]
    with store.writer("copy", "scores") as w:
        w.write_table(read_table(good))
    assert read_table(w.result).to_pylist() == read_table(good).to_pylist()
    assert w.result.manifest["rows"] == 18
    with pytest.raises(InputError, match="does not fit kind 'scores'"):
        with store.writer("bad", "scores") as w:
            w.write_table(read_table(good).drop_columns(["scores"]))
    assert store.versions("bad") == []


# ---- issue 11: a pull is all or nothing, never extends unrelated names, checks rows, bounded ---------------
SCORES_SHARD = "data/scores/train-00000-of-00001.parquet"


def _tamper(hub: FakeHub, change_table=None, change_manifest=None, *, refingerprint: bool = True) -> None:
    """Rewrite the scores config at tag v1 like a hostile repo would: consistent manifest, bad rows."""
    head = hub.repos[REPO].commits[hub.repos[REPO].tags["v1"]]
    table = pq.read_table(io.BytesIO(head.files[SCORES_SHARD].data))
    manifest = json.loads(head.files["ares/scores/manifest.json"].data)
    if change_table is not None:
        table = change_table(table)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        head.files[SCORES_SHARD].data = buf.getvalue()
        if refingerprint:
            manifest["content_fingerprint"] = content_fingerprint("scores", table)
    if change_manifest is not None:
        change_manifest(manifest)
    head.files["ares/scores/manifest.json"].data = json.dumps(manifest).encode()


def _set_column(name: str, values: list) -> object:
    def change(table: pa.Table) -> pa.Table:
        i = table.schema.get_field_index(name)
        return table.set_column(i, name, pa.array(values, table.schema.field(name).type))
    return change


def _nothing_published(root: Path) -> None:
    """No version and no dataset folder: only the store's hidden staging area may exist."""
    assert Store(root).names() == []
    assert not root.exists() or not [p for p in root.iterdir() if not p.name.startswith(".")]


def test_pull_publishes_all_configs_or_none(hub: FakeHub, lineage: dict, tmp_path: Path) -> None:
    _push("--with-parents")
    _tamper(hub, _set_column("problem_id", ["x"] * 18), refingerprint=False)  # the last config is bad
    r = data(["pull", f"{REPO}@v1", "--store", tmp_path / "s2"])
    assert r.exit_code == 1 and "content fingerprint mismatch" in r.stderr, r.output
    _nothing_published(tmp_path / "s2")  # the parents staged before it are not published either


@pytest.mark.parametrize("change,expected", [
    (lambda t: t.append_column("extra", pa.array([1] * t.num_rows)), "unexpected column(s) ['extra']"),
    (lambda t: t.set_column(t.schema.get_field_index("attempts"), "attempts",
                            t.column("attempts").cast(pa.int64())), "'attempts' is int64, expected int32"),
])
def test_pull_refuses_other_columns_before_publishing(hub: FakeHub, lineage: dict, tmp_path: Path, change,
                                                      expected: str) -> None:
    _push("--with-parents")
    _tamper(hub, change)
    r = data(["pull", f"{REPO}@v1", "--store", tmp_path / "s2"])
    assert r.exit_code == 1, r.output
    assert f"{SCORES_SHARD}: does not fit kind 'scores': {expected}" in r.stderr, r.stderr
    _nothing_published(tmp_path / "s2")


def test_pull_never_extends_unrelated_local_datasets(hub: FakeHub, lineage: dict, tmp_path: Path) -> None:
    _push("--with-parents")
    mine = Store(tmp_path / "mine")
    build_lineage(mine, n_problems=3)  # the user's own sqa/rats/scores, other content
    before = {n: mine.versions(n) for n in mine.names()}
    for extra in ([], ["-o", "shared"]):
        r = data(["pull", f"{REPO}@v1", "--store", mine.root, *extra])
        assert r.exit_code == 2, r.output
        assert f"pulling {REPO} would add a version to your local dataset 'sqa'" in r.stderr
        assert "--prefix" in r.stderr
        assert {n: mine.versions(n) for n in mine.names()} == before
    r = data(["pull", f"{REPO}@v1", "--store", mine.root, "--prefix", "hub-", "-o", "shared", "--json"])
    assert r.exit_code == 0, r.output
    assert [v["ref"] for v in r.json()] == ["hub-sqa@v1", "hub-rats@v1", "shared@v1"]
    assert mine.parent_chain(mine.resolve("shared"), "problems").ref == "hub-sqa@v1"
    again = data(["pull", f"{REPO}@v1", "--store", mine.root, "--prefix", "hub-", "-o", "shared", "--json"])
    assert again.exit_code == 0 and all(v["reused"] for v in again.json())  # same repo: its own lineage


@pytest.mark.parametrize("values,expected", [
    ("range", "row 1, field 'scores[0]': 99.0 is outside [0, 1]"),
    ("count", "row 1, field 'scores': 1 scores for 3 sentences"),
])
def test_pull_checks_rows_against_the_kind(hub: FakeHub, lineage: dict, tmp_path: Path, values: str,
                                           expected: str) -> None:
    _push("--with-parents")
    scores = [list(s) for s in lineage["scores"].load()["scores"]]
    scores[0] = [99.0] * len(scores[0]) if values == "range" else scores[0][:1]
    _tamper(hub, _set_column("scores", scores))
    r = data(["pull", f"{REPO}@v1", "--store", tmp_path / "s2"])
    assert r.exit_code == 1 and f"{SCORES_SHARD}, {expected}" in r.stderr, r.stderr
    _nothing_published(tmp_path / "s2")


def test_pull_recomputes_counts_from_the_rows(hub: FakeHub, lineage: dict, tmp_path: Path) -> None:
    _push()

    def claim(m: dict) -> None:
        m["counts"] = {"ok": 10**12, "failed": -5}
        m["usage"] = {"input_tokens": 10**15}
    _tamper(hub, change_manifest=claim)
    r = data(["pull", f"{REPO}@v1", "--store", tmp_path / "s2", "--json"])
    assert r.exit_code == 0, r.output
    pulled = Store(tmp_path / "s2").resolve("scores")
    table = read_table(pulled)
    ok = table.column("status").to_pylist().count("ok")
    assert pulled.manifest["counts"]["ok"] == ok == 16 and pulled.manifest["counts"]["failed"] == 2
    assert pulled.manifest["usage"]["input_tokens"] == sum(table.column("input_tokens").to_pylist())
    assert pulled.manifest["pulled_from"]["counts"] == {"ok": 10**12, "failed": -5}  # the claim: provenance


def test_pull_checks_declared_sizes_before_reading_rows(hub: FakeHub, lineage: dict, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import ares_data.hub_pull as hub_pull

    _push()
    _tamper(hub, change_manifest=lambda m: m.update(rows=5))
    read: list[str] = []
    real = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches",
                        lambda self, **kw: read.append("x") or real(self, **kw))
    r = data(["pull", f"{REPO}@v1", "--store", tmp_path / "s2"])
    assert r.exit_code == 1 and "config scores holds 18 rows, its manifest says 5" in r.stderr, r.stderr
    assert read == []  # refused from the Parquet footer, no row decoded
    _tamper(hub, change_manifest=lambda m: m.update(rows=18))
    monkeypatch.setattr(hub_pull, "MAX_ROW_BYTES", 10)
    r = data(["pull", f"{REPO}@v1", "--store", tmp_path / "s2"])
    assert r.exit_code == 1 and "row group 0 declares" in r.stderr and read == [], r.stderr
    _nothing_published(tmp_path / "s2")


def test_pull_decodes_in_bounded_slices(hub: FakeHub, lineage: dict, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A value repeated in every row is stored once (dictionary page): its file declares little. Rows are
    decoded slice by slice from the dictionary-encoded batch, and a row too big on its own is refused."""
    import ares_data.hub_pull as hub_pull

    _push()
    monkeypatch.setattr(hub_pull, "BATCH_BYTES", 4_000)  # a few rows a slice
    written: list[int] = []
    real = hub_pull.Writer.write_table
    monkeypatch.setattr(hub_pull.Writer, "write_table", lambda w, t: written.append(t.num_rows) or real(w, t))
    r = data(["pull", f"{REPO}@v1", "--store", tmp_path / "s1", "--json"])
    assert r.exit_code == 0, r.output
    assert sum(written) == 18 + 18 + 6 and max(written) < 18  # scores, rationales, problems
    assert read_table(Store(tmp_path / "s1").resolve("scores")).to_pylist() == \
        read_table(lineage["scores"]).to_pylist()
    _tamper(hub, _set_column("raw_response", ["x" * 100_000] * 18))  # 1.8 MB decoded, ~100 KB declared
    head = hub.repos[REPO].commits[hub.repos[REPO].tags["v1"]]
    assert len(head.files[SCORES_SHARD].data) < 20_000
    monkeypatch.setattr(hub_pull, "MAX_ROW_BYTES", 50_000)
    r = data(["pull", f"{REPO}@v1", "--store", tmp_path / "s2"])
    assert r.exit_code == 1, r.output
    assert f"{SCORES_SHARD}, row 1: decodes to" in r.stderr and "more than 50,000 bytes a row" in r.stderr
    _nothing_published(tmp_path / "s2")


def test_push_refuses_a_damaged_version(hub: FakeHub, lineage: dict) -> None:
    from ares_data.integrity import DATA_FILE

    path = lineage["scores"].path / DATA_FILE
    blob = bytearray(path.read_bytes())
    blob[blob.index(b"unparseable reply")] ^= 1
    path.write_bytes(bytes(blob))
    r = data(["push", "scores", "--repo", REPO])
    assert r.exit_code == 1 and "scores@v1 is damaged: the data no longer matches its fingerprint" in r.stderr
    assert REPO not in hub.repos


def test_content_fingerprint_is_the_same_in_bounded_slices(lineage: dict,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import ares_data.hub as hub_module

    table = read_table(lineage["problems"])  # images: binary values inside structs
    whole = content_fingerprint("problems", table)
    real = hub_module._slices
    monkeypatch.setattr(hub_module, "_slices", lambda column: real(column, max_bytes=1))  # one row a slice
    assert content_fingerprint("problems", table) == whole


def test_pull_reads_batches_that_span_row_groups(lineage: dict, tmp_path: Path) -> None:
    """Row groups (each with its own dictionaries) are read one at a time: Arrow cannot give a nested column
    as chunked dictionaries; nested strings (sentences) stay dictionary-encoded until their size is known."""
    from ares_data.hub_pull import _batches, _bounded

    for kind in ("scores", "rationales"):
        table = read_table(lineage[kind])
        path = tmp_path / f"{kind}.parquet"
        pq.write_table(table, path, row_group_size=5)
        batches = list(_batches(path))
        assert "list<element: dictionary<values=string" in str(batches[0].schema.field("sentences").type) \
            or "text: dictionary<values=string" in str(batches[0].schema.field("sentences").type)
        rows = [t for b in batches for t in _bounded(b, "shard", 0)]
        assert pa.concat_tables(rows).cast(table.schema).to_pylist() == table.to_pylist()


def test_pull_falls_back_when_nested_dictionaries_cannot_be_read(lineage: dict, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """When Arrow gives up on nested dictionaries part way through a row group, the rest of the group is
    read again without them: no row lost, none twice."""
    import ares_data.hub_pull as hub_pull

    table = read_table(lineage["scores"])
    path = tmp_path / "scores.parquet"
    pq.write_table(table, path, row_group_size=10)
    real = pq.ParquetFile

    class Flaky(real):  # type: ignore[misc, valid-type]
        def __init__(self, source, read_dictionary=None, **kw):
            super().__init__(source, read_dictionary=read_dictionary, **kw)
            self.nested = any("." in c for c in read_dictionary or [])

        def iter_batches(self, **kw):
            for n, batch in enumerate(super().iter_batches(**kw)):
                if self.nested and n == 1:
                    raise pa.ArrowNotImplementedError("Nested data conversions not implemented")
                yield batch

    monkeypatch.setattr(hub_pull.pq, "ParquetFile", Flaky)
    monkeypatch.setattr(hub_pull, "BATCH_BYTES", 2_000)  # several batches a row group
    rows = [t for b in hub_pull._batches(path) for t in hub_pull._bounded(b, "shard", 0)]
    assert pa.concat_tables(rows).cast(table.schema).to_pylist() == table.to_pylist()


def test_a_pull_failing_part_way_through_publishing_retracts_what_it_published(
        hub: FakeHub, lineage: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _push("--with-parents")
    real = Store.commit

    def commit(self: Store, w, name: str, **kw):  # the disk fills up as the last config is published
        if name == "scores":
            raise OSError(28, "No space left on device")
        return real(self, w, name, **kw)

    monkeypatch.setattr(Store, "commit", commit)
    r = data(["pull", f"{REPO}@v1", "--store", tmp_path / "s2"])
    assert r.exit_code == 1 and "No space left on device" in r.stderr
    _nothing_published(tmp_path / "s2")  # sqa@v1 and rats@v1 were published, then taken back
    monkeypatch.setattr(Store, "commit", real)
    r = data(["pull", f"{REPO}@v1", "--store", tmp_path / "s2", "--json"])
    assert [v["ref"] for v in r.json()] == ["sqa@v1", "rats@v1", "scores@v1"]


@pytest.mark.parametrize("change,expected", [
    (lambda m: m.pop("kind"), "the manifest has no 'kind'"),
    (lambda m: m.update(parents="rats@v1"), "the manifest's 'parents' is not a list"),
    (lambda m: m.update(rows=-5), "a negative row count"),
])
def test_pull_refuses_a_damaged_remote_manifest(hub: FakeHub, lineage: dict, tmp_path: Path, change,
                                                expected: str) -> None:
    _push()
    _tamper(hub, change_manifest=change)
    r = data(["pull", f"{REPO}@v1", "--store", tmp_path / "s2"])
    assert r.exit_code == 1, r.output
    assert f"{REPO}: ares/scores/manifest.json is damaged: {expected}" in r.stderr, r.stderr
    _nothing_published(tmp_path / "s2")
