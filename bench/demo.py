"""Time `ares demo` (the README's first command) end to end in a fresh process, per phase and stage.

    python bench/demo.py [--out /tmp/ares-bench-demo] [-- extra demo flags]

Runs `ares demo --out OUT --json` from an empty OUT (Python start-up and imports included), then a second
time in the same OUT (everything reused), and prints wall times, the load average, and each loop stage's
seconds from OUT/run/run.json, and the second part's (controlled task) seconds and table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run(out: Path, extra: list[str]) -> tuple[float, dict]:
    cmd = [sys.executable, "-c", "import cli; cli.main()", "demo", "--out", str(out), "--json", *extra]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                          check=False)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/ares-bench-demo"))
    ap.add_argument("extra", nargs="*", help="extra `ares demo` flags (after --)")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    load0 = os.getloadavg()[0]
    first, report = run(args.out, args.extra)
    load1 = os.getloadavg()[0]
    second, _ = run(args.out, args.extra)
    stages = json.loads((args.out / "run" / "run.json").read_text())["stages"]
    by_kind: dict[str, float] = {}
    for s in stages:
        by_kind[s["kind"]] = by_kind.get(s["kind"], 0.0) + (s["seconds"] or 0.0)
    loop_s = sum(by_kind.values())
    learning = report.get("learning", {})
    print(json.dumps({
        "first_run_s": round(first, 1), "rerun_s": round(second, 1),
        "load_average_before_after": [round(load0, 2), round(load1, 2)],
        "loop_s": round(loop_s, 1), "loop_by_kind_s": {k: round(v, 1) for k, v in by_kind.items()},
        "outside_loop_s (imports, ingest, tiny model, warm-start SFT, final rollout, judge, report)":
            round(first - loop_s, 1),
        "rounds": report["rounds"], "judge_rates": report["judge"]["rates"],
        "learning_part_s (warm-start SFT, rollouts, checker, PPO, KL)": learning.get("seconds"),
        "learning_rounds": [{k: round(v, 3) for k, v in r.items()} for r in learning.get("rounds", [])],
    }, indent=2))


if __name__ == "__main__":
    main()
