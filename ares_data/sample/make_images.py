"""Draw the sample's small PNG images (64x64) that the sample questions refer to.

Run `python -m ares_data.sample.make_images` to regenerate `scienceqa/images/<split>/<pid>/image.png`.
Each drawing matches its question in `scienceqa/problems.json` (e.g. pid 14: the middle bar is tallest).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).parent / "scienceqa"
SIZE = 64
Draw = ImageDraw.ImageDraw


def _magnets(d: Draw) -> None:  # pid 1: N faces N -> repel
    d.rectangle([2, 24, 15, 40], fill=(40, 90, 220))
    d.rectangle([16, 24, 29, 40], fill=(220, 40, 40))
    d.rectangle([34, 24, 47, 40], fill=(220, 40, 40))
    d.rectangle([48, 24, 61, 40], fill=(40, 90, 220))
    for x, label in ((6, "S"), (20, "N"), (38, "N"), (52, "S")):
        d.text((x, 27), label, fill="white")


def _punnett(d: Draw) -> None:  # pid 9: three dark boxes, one light
    dark, light = (70, 45, 25), (235, 215, 170)
    boxes = [
        ((8, 8, 31, 31), dark),
        ((32, 8, 55, 31), dark),
        ((8, 32, 31, 55), dark),
        ((32, 32, 55, 55), light),
    ]
    for box, colour in boxes:
        d.rectangle(box, fill=colour, outline="black")


def _balls(d: Draw) -> None:  # pid 10: the right ball is biggest
    d.ellipse([2, 36, 12, 46], fill=(230, 120, 30))
    d.ellipse([16, 32, 32, 48], fill=(30, 150, 60))
    d.ellipse([36, 20, 62, 46], fill=(40, 80, 210))


def _moon(d: Draw) -> None:  # pid 11: first quarter, right half lit
    d.rectangle([0, 0, SIZE, SIZE], fill=(10, 10, 40))
    d.ellipse([12, 12, 52, 52], fill=(60, 60, 70))
    d.pieslice([12, 12, 52, 52], start=-90, end=90, fill=(245, 240, 200))


def _beaker(d: Draw) -> None:  # pid 12: yellow oil on top of blue water
    d.rectangle([16, 30, 48, 44], fill=(240, 210, 60))
    d.rectangle([16, 44, 48, 60], fill=(50, 110, 220))
    d.line([(15, 8), (15, 61), (49, 61), (49, 8)], fill="black", width=2)


def _line_graph(d: Draw) -> None:  # pid 13: temperature rises through the morning
    d.line([(6, 4), (6, 58), (60, 58)], fill="black", width=1)
    d.line([(8, 52), (20, 44), (32, 36), (44, 22), (58, 10)], fill=(220, 40, 40), width=2)


def _bars(d: Draw) -> None:  # pid 14: the middle bar (Brookville) is tallest
    d.line([(4, 60), (60, 60)], fill="black")
    d.rectangle([8, 34, 20, 59], fill=(60, 120, 200))
    d.rectangle([26, 10, 38, 59], fill=(60, 120, 200))
    d.rectangle([44, 26, 56, 59], fill=(60, 120, 200))


def _seeds(d: Draw) -> None:  # pid 15: five seeds
    for x, y in ((8, 10), (36, 8), (20, 30), (44, 34), (10, 48)):
        d.ellipse([x, y, x + 12, y + 7], fill=(120, 80, 30))


def _arrow(d: Draw) -> None:  # pid 23: arrow points right (east); N marker at top
    d.line([(10, 32), (50, 32)], fill="black", width=3)
    d.polygon([(50, 24), (60, 32), (50, 40)], fill="black")
    d.text((29, 2), "N", fill="black")


def _pie(d: Draw) -> None:  # pid 31: about 7/10 water
    d.pieslice([6, 6, 58, 58], start=0, end=252, fill=(50, 110, 220))
    d.pieslice([6, 6, 58, 58], start=252, end=360, fill=(150, 100, 50))


def _globe(d: Draw) -> None:  # pid 37: red equator around the middle
    d.ellipse([6, 6, 58, 58], fill=(120, 180, 240), outline="black")
    d.line([(6, 32), (58, 32)], fill=(220, 30, 30), width=2)


def _lake(d: Draw) -> None:  # pid 41: blue lake inside green land
    d.rectangle([0, 0, SIZE, SIZE], fill=(90, 170, 80))
    d.ellipse([16, 20, 50, 44], fill=(50, 110, 220))


DRAWINGS: dict[str, Callable[[Draw], None]] = {
    "1": _magnets,
    "9": _punnett,
    "10": _balls,
    "11": _moon,
    "12": _beaker,
    "13": _line_graph,
    "14": _bars,
    "15": _seeds,
    "23": _arrow,
    "31": _pie,
    "37": _globe,
    "41": _lake,
}


def main(root: Path = HERE) -> list[Path]:
    problems = json.loads((root / "problems.json").read_text())
    written = []
    for pid, draw in DRAWINGS.items():
        assert problems[pid]["image"] == "image.png", pid
        img = Image.new("RGB", (SIZE, SIZE), "white")
        draw(ImageDraw.Draw(img))
        out = root / "images" / problems[pid]["split"] / pid / "image.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        img.save(out, optimize=True)
        written.append(out)
    return written


if __name__ == "__main__":
    for path in main():
        print(path)
