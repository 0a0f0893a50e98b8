"""`ares-data push / pull / card`: share versions on the Hugging Face Hub with a dataset card."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import JsonOpt, StoreOpt, console, emit_json, err_console, get_store, published_message

app = typer.Typer()

LicenseOpt = Annotated[str, typer.Option("--license", help="License id for the card (e.g. cc-by-4.0).")]


@app.command("push")
def push_cmd(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@vN")],
    repo: Annotated[str, typer.Option("--repo", help="Hub dataset repo, OWNER/NAME.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private.")] = False,
    with_parents: Annotated[bool, typer.Option("--with-parents", help="Also push the lineage (problems -> "
                                               "rationales -> ...) as configs of the same repo.")] = False,
    license: LicenseOpt = "other",
    max_shard_mb: Annotated[int, typer.Option("--max-shard-mb", min=1, help="Parquet shard size limit.")]
    = 500,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a version as Parquet + card + manifest, tagged v<N> (token: HF_TOKEN or `hf auth login`).

    Re-running after a failure uploads only what the Hub does not have yet.

    Example: ares-data push rats-scores@v3 --repo me/ares-scores --with-parents --license cc-by-4.0
    """
    from ..hub import push

    with err_console().status(f"pushing {ref} to {repo} ..."):
        res = push(get_store(store), ref, repo, private=private, with_parents=with_parents, license=license,
                   max_shard_bytes=max_shard_mb * 1024**2)
    if as_json:
        emit_json(res.__dict__)
        return
    c = console()
    c.print(f"pushed {', '.join(f'{k}={v}' for k, v in res.configs.items())} to {res.url} "
            f"(tag {res.tag}, commit {str(res.commit)[:12]})")
    c.print(f"{len(res.uploaded)} file(s) uploaded, {len(res.unchanged)} already there, "
            f"{len(res.deleted)} removed")
    c.print(f'load: datasets.load_dataset("{res.repo}", revision="{res.tag}")')


@app.command("pull")
def pull_cmd(
    spec: Annotated[str, typer.Argument(help="OWNER/NAME or OWNER/NAME@REVISION (tag, branch or commit).")],
    output: Annotated[str, typer.Option("-o", "--output", help="Local name for the default config "
                                        "(default: its original name).")] = "",
    prefix: Annotated[str, typer.Option("--prefix", help="Put PREFIX in front of the local name of every "
                                        "pulled dataset (not the one named with -o), e.g. hub-.")] = "",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Bring a pushed dataset (and the lineage pushed with it) back into the store: all of its configs or
    none, rows checked against their kind's schema and invariants, counts recomputed, fingerprints verified.
    A local dataset of the same name that was not pulled from this repo is never extended: use --prefix.

    Example: ares-data pull me/ares-scores@v3 -o scores-from-hub --prefix hub-"""
    from ..hub_pull import pull

    with err_console().status(f"pulling {spec} ..."):
        versions = pull(get_store(store), spec, output or None, prefix)
    if as_json:
        emit_json([{"ref": v.ref, "kind": v.kind, "rows": v.manifest["rows"], "reused": v.reused,
                    "pulled_from": v.manifest.get("pulled_from")} for v in versions])
        return
    for v in versions:
        console().print(published_message(v) + " (content fingerprint verified)")


@app.command("card")
def card_cmd(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@vN")],
    repo: Annotated[str, typer.Option("--repo", help="Hub repo the card will live in (for links).")] = "",
    with_parents: Annotated[bool, typer.Option("--with-parents", help="Render as pushed with its lineage.")]
    = False,
    license: LicenseOpt = "other",
    store: StoreOpt = None,
) -> None:
    """Print the dataset card (README.md, starting with its --- YAML block) that `push` would upload.

    Example: ares-data card rats-scores --repo me/ares-scores --with-parents > README.md"""
    import sys

    from ..cards import render_card
    from ..hub import plan_configs

    s = get_store(store)
    version = s.resolve(ref)
    card = render_card(s, version, configs=plan_configs(s, version, with_parents), repo=repo or None,
                       tag=f"v{version.version}", license=license,
                       image=f"assets/{version.kind}-scores.png" if version.kind == "scores" else None)
    sys.stdout.write(card)
