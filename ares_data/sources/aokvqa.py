"""A-OKVQA: the official annotation JSON plus a COCO image folder.

The file is a list of {question_id, question, choices, correct_choice_idx, direct_answers, rationales,
image_id, difficult_direct_answer?, split?}. Images live at `<images>/<split>2017/<image_id:012d>.jpg`
(or directly in `<images>/`). The split comes from `--split`, else each record's `split`, else the file name
(`aokvqa_v1p0_val.json`). The official test split has no answers: its rows get `answer_index` null.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from .base import ProblemSource, Where, check_choices, problem_row, read_image, require
from .guards import check_image_inside, image_roots, usable_image
from .scienceqa import load_json

_SPLIT_IN_NAME = re.compile(r"(?:^|[_\-.])(train|val|test)(?:[_\-.]|$)")


class AOKVQAFile(ProblemSource):
    source = "aokvqa"

    def __init__(self, path: Path, images: Path | None = None, split: str | None = None, *,
                 allow_outside_images: bool = False) -> None:
        self.path, self.images = path, images
        if images is not None and not images.is_dir():
            raise InputError("image folder not found", file=str(images), field="--images")
        self.allow_outside_images = allow_outside_images  # else images only from inside `images`
        self._roots = image_roots(images)
        data = load_json(path)
        if not isinstance(data, list):
            raise InputError(f"expected a JSON list of questions, got {type(data).__name__}", file=str(path))
        self.data: list[Any] = data
        m = _SPLIT_IN_NAME.search(path.stem)
        self.split_option, self.split_from_name = split, (m.group(1) if m else None)

    def params(self) -> dict[str, Any]:
        return {
            "path": str(self.path.resolve()),
            "split": self.split_option,
            "images": str(self.images.resolve()) if self.images else None,
            **({"allow_outside_images": True} if self.allow_outside_images else {}),
        }

    def total(self) -> int:
        return len(self.data)

    def _split(self, rec: Any) -> str | None:
        if self.split_option:
            return self.split_option
        if isinstance(rec, dict) and isinstance(rec.get("split"), str) and rec["split"]:
            return rec["split"]
        return self.split_from_name

    def _image_path(self, split: str | None, image_id: int) -> Path | None:
        assert self.images is not None
        name = f"{image_id:012d}.jpg"
        candidates = [self.images / f"{split}2017" / name, self.images / name]
        return next((p for p in candidates if p.is_file()), None)

    def input_files(self) -> list[Path]:
        files = [self.path]
        if self.images is not None:
            for rec in self.data:
                if isinstance(rec, dict) and isinstance(rec.get("image_id"), int):
                    found = self._image_path(self._split(rec), rec["image_id"])
                    if usable_image(found, self._roots, self.allow_outside_images):
                        files.append(found)
        return files

    def records(self) -> Iterator[tuple[Where, Any]]:
        for i, rec in enumerate(self.data):
            yield Where(str(self.path), i, self._split(rec)), rec

    def convert(self, where: Where, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise InputError(
                f"expected a JSON object, got {type(raw).__name__}", file=where.file, row=where.row
            )
        if where.split is None:
            raise InputError(
                "cannot tell the split: pass --split or name the file like aokvqa_v1p0_val.json",
                file=where.file,
                row=where.row,
                field="split",
            )
        qid = str(require(raw, "question_id", (str, int), where))
        question = require(raw, "question", str, where)
        image_id = require(raw, "image_id", int, where)
        raw_choices = require(raw, "choices", list, where)
        if raw.get("correct_choice_idx") is None and where.split == "test":
            choices, index = check_choices(raw_choices, 0, where)
            index_or_none, answer = None, ""
        else:
            choices, index = check_choices(
                raw_choices,
                require(raw, "correct_choice_idx", int, where),
                where,
                index_field="correct_choice_idx",
            )
            index_or_none, answer = index, choices[index]
        rationales = raw.get("rationales") or []
        if not isinstance(rationales, list) or not all(isinstance(r, str) for r in rationales):
            raise InputError("expected a list of strings", file=where.file, row=where.row, field="rationales")
        image = None
        if self.images is not None:
            path = self._image_path(where.split, image_id)
            if path is None:
                raise InputError(
                    f"image {image_id:012d}.jpg not found in {self.images}/{where.split}2017/ "
                    f"or {self.images}/",
                    file=where.file,
                    row=where.row,
                    field="image_id",
                )
            # the folder comes from the split: a split of "../x" would read <images>/../x2017/
            check_image_inside(path, f"{where.split}2017/{path.name}", self._roots, where, "split",
                               self.allow_outside_images)
            image = read_image(path, where, field="image_id")
        metadata = {
            "image_id": image_id,
            "direct_answers": raw.get("direct_answers") or [],
            "rationales": rationales,
            "difficult_direct_answer": raw.get("difficult_direct_answer"),
        }
        return problem_row(
            problem_id=qid,
            source="aokvqa",
            split=where.split,
            question=question,
            choices=choices,
            answer_index=index_or_none,
            answer=answer,
            image=image,
            reference_rationale="\n".join(r.strip() for r in rationales),
            metadata=metadata,
        )
