"""Ingest at ScienceQA scale: a synthetic official-layout folder, then import-rationales.

    python bench/ingest.py                       # 21,208 problems (ScienceQA's size), ~49% with images
    python bench/ingest.py --problems 2000       # quicker

The folder repeats the shipped sample's problems under new pids; images are 320x240 PNGs (~4 KB, a
few distinct drawings, like ScienceQA's small diagrams). Reports wall time, rows/s, peak RSS of this
process, the store size, the time of an identical re-ingest (reused version) and import-rationales speed
(4 rationales per train problem, segmented).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, ImageDraw  # noqa: E402

from ares_data.rationales import import_rationales  # noqa: E402
from ares_data.sample import RATIONALES, SAMPLE_DIR  # noqa: E402
from ares_data.sources import ingest, open_scienceqa  # noqa: E402
from ares_data.store import Store  # noqa: E402


def _images(n: int) -> list[bytes]:
    out = []
    rng = random.Random(0)
    for _ in range(n):
        img = Image.new("RGB", (320, 240), "white")
        d = ImageDraw.Draw(img)
        for _ in range(40):
            x, y = rng.randrange(300), rng.randrange(220)
            d.rectangle([x, y, x + rng.randrange(5, 60), y + rng.randrange(5, 60)],
                        fill=tuple(rng.randrange(256) for _ in range(3)))
        path = Path(tempfile.mktemp(suffix=".png"))
        img.save(path)
        out.append(path.read_bytes())
        path.unlink()
    return out


def make_folder(root: Path, n: int, image_share: float = 0.487) -> tuple[Path, Path]:
    sample = json.loads((SAMPLE_DIR / "problems.json").read_text())
    base = list(sample.values())
    images = _images(8)
    problems, splits = {}, {"train": [], "val": [], "test": []}
    rng = random.Random(1)
    for i in range(n):
        pid = str(i + 1)
        rec = dict(base[i % len(base)])
        split = "train" if i % 10 < 6 else ("val" if i % 10 < 8 else "test")
        rec["split"] = split
        rec["image"] = "image.png" if rng.random() < image_share else None
        if rec["image"]:
            folder = root / "images" / split / pid
            folder.mkdir(parents=True)
            (folder / "image.png").write_bytes(images[i % len(images)])
        problems[pid] = rec
        splits[split].append(pid)
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps(splits))
    sample_rats = [json.loads(line) for line in RATIONALES.read_text().splitlines()]
    rats = root / "rationales.jsonl"
    with open(rats, "w") as f:
        for pid in splits["train"]:
            for k in range(4):
                text = sample_rats[(int(pid) * 4 + k) % len(sample_rats)]["text"]
                f.write(json.dumps({"problem_id": pid, "text": text, "sample_index": k}) + "\n")
    return root, rats


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=21208)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ares-bench-ingest-"))
    try:
        t = time.perf_counter()
        src, rats = make_folder(work / "sqa", args.problems)
        made = time.perf_counter() - t
        store = Store(work / "store")
        rss0 = _rss_mb()
        t = time.perf_counter()
        v = ingest(store, "sqa", open_scienceqa(src))
        ingest_s = time.perf_counter() - t
        rss1 = _rss_mb()
        t = time.perf_counter()
        again = ingest(store, "sqa", open_scienceqa(src))
        reingest_s = time.perf_counter() - t
        t = time.perf_counter()
        r = import_rationales(store, "rats", rats, v)
        rats_s = time.perf_counter() - t
        size = sum(p.stat().st_size for p in v.path.rglob("*") if p.is_file())
        print(json.dumps({
            "problems": v.manifest["rows"], "with_image": v.manifest["counts"].get("with_image", 0),
            "make_folder_s": round(made, 1), "ingest_s": round(ingest_s, 2),
            "ingest_rows_per_s": round(v.manifest["rows"] / ingest_s),
            "reingest_reused": again.reused, "reingest_s": round(reingest_s, 2),
            "peak_rss_mb_before_ingest": round(rss0), "peak_rss_mb_after_ingest": round(rss1),
            "dataset_mb": round(size / 1e6, 1),
            "rationales": r.manifest["rows"], "import_rationales_s": round(rats_s, 2),
            "rationales_per_s": round(r.manifest["rows"] / rats_s),
        }, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
