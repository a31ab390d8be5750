"""Label maps of VSPW and of other datasets -> VSPW train ids, by 256-entry lookup tables.

The mappings of COCO-Stuff, ADE20K and Cityscapes are reviewed data files in
``remap_tables/`` (one line per source class: id, name, VSPW class or ``-`` for 255, and
the reason for every merge and drop); they are parsed and checked when a remapper is built.
A row whose reason starts with ``loose`` is a mapping a strict reading leaves out (COCO-Stuff:
the 18 beyond the 3rd-place report's 131 classes, see ``remap_tables/README``).
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..data.classes import VSPW_CLASSES
from ..errors import ConfigError, DataError
from ..interfaces import IGNORE_INDEX


class LUTRemapper:
    """A 256-entry lookup table from source values to train ids, and the labelled-fraction filter."""

    lut: np.ndarray
    source_classes: list[str]

    def __init__(self, min_labelled: float = 0.0):
        if not 0.0 <= min_labelled <= 1.0:
            raise ValueError(f"min_labelled must be a fraction in [0, 1], got {min_labelled}")
        self.min_labelled = min_labelled

    def __call__(self, mask: Any) -> Any:
        """Remap a label map (numpy array or torch tensor of values 0..255); returns the same kind, uint8."""
        if isinstance(mask, torch.Tensor):
            _check_range(mask.min().item() if mask.numel() else 0, mask.max().item() if mask.numel() else 0)
            return torch.from_numpy(self.lut).to(mask.device)[mask.long()]
        mask = np.asarray(mask)
        if mask.dtype != np.uint8:
            if mask.size:
                _check_range(mask.min(), mask.max())
            mask = mask.astype(np.uint8)
        return self.lut[mask]

    def keep(self, remapped_mask: Any) -> bool:
        """Whether at least ``min_labelled`` of the pixels carry a train id after remapping."""
        labelled = remapped_mask != IGNORE_INDEX
        fraction = float(labelled.float().mean()) if isinstance(labelled, torch.Tensor) else float(np.mean(labelled))
        return fraction >= self.min_labelled


def _check_range(low: Any, high: Any) -> None:
    if low < 0 or high > 255:
        raise DataError(
            f"label map values must be 0..255 (8-bit label PNGs), found {low}..{high}; "
            "the file is not a label map of this dataset"
        )


class VSPWRemapper(LUTRemapper):
    """VSPW raw ids -> train ids: 0 ("others") and 255 ignored, 1..124 -> 0..123."""

    def __init__(self, min_labelled: float = 0.0):
        super().__init__(min_labelled)
        num_classes = len(VSPW_CLASSES)
        self.lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        self.lut[1 : num_classes + 1] = np.arange(num_classes, dtype=np.uint8)
        self.source_classes = ["others", *VSPW_CLASSES]


# -- remapping tables -----------------------------------------------------------------

TABLES_DIR = Path(__file__).with_name("remap_tables")
TABLE_HEADER = ("id", "name", "vspw", "reason")
DROP = "-"


TABLE_READINGS = ("strict", "loose")


@dataclass(frozen=True)
class TableRow:
    """One source class: its label value, name, VSPW class (None: 255) and why, and its line in the file."""

    source_id: int
    source_name: str
    target: str | None
    reason: str
    line: int

    @property
    def loose(self) -> bool:
        """A looser match (reason ``loose: ...`` or ``loose, merge: ...``): mapped only with ``table: loose``."""
        tags, colon, _ = self.reason.partition(":")
        return bool(colon) and "loose" in {tag.strip() for tag in tags.split(",")}


def read_table(path: str | Path) -> list[TableRow]:
    """Parse and check a remapping table; any fault raises a DataError naming the file and line.

    Tab-separated, ``#`` comments and blank lines skipped, a header ``id name vspw reason``,
    then one row per source class. Ids are 0..255 and listed once; ``vspw`` is a class of
    :data:`VSPW_CLASSES` or ``-``; ``reason`` is required for a drop (``-``) and for every
    row of a merge (several ids -> one class).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"remapping table {path} cannot be read ({exc})") from exc
    rows: list[TableRow] = []
    seen: dict[int, int] = {}
    header_seen = False
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        where = f"remapping table {path}, line {number}"
        fields = [field.strip() for field in raw.split("\t")]
        if not header_seen:
            if tuple(fields) != TABLE_HEADER:
                raise DataError(
                    f"{where}: expected the tab-separated header {' '.join(TABLE_HEADER)!r}, found {raw.strip()!r}"
                )
            header_seen = True
            continue
        if len(fields) == 3:  # an editor stripped the trailing tab of an empty reason
            fields.append("")
        if len(fields) != 4:
            raise DataError(
                f"{where}: expected 4 tab-separated fields (id, name, vspw, reason), "
                f"found {len(fields)}: {raw.strip()!r}"
            )
        id_text, name, target, reason = fields
        try:
            source_id = int(id_text)
        except ValueError:
            raise DataError(f"{where}: id {id_text!r} is not an integer") from None
        if not 0 <= source_id <= 255:
            raise DataError(f"{where}: id {source_id} is outside 0..255 (label maps are 8-bit)")
        if source_id in seen:
            raise DataError(
                f"{where}: id {source_id} is already listed on line {seen[source_id]}; list each source id once"
            )
        if not name:
            raise DataError(f"{where}: id {source_id} has no name")
        if target != DROP and target not in VSPW_CLASSES:
            close = difflib.get_close_matches(target, VSPW_CLASSES, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise DataError(
                f"{where}: {target!r} is not a VSPW class (write a name of "
                f"zoo_core.data.classes.VSPW_CLASSES, or - for 255){hint}"
            )
        if target == DROP and not reason:
            raise DataError(f"{where}: {name!r} is dropped (-) without a reason; say why no VSPW class fits")
        seen[source_id] = number
        rows.append(TableRow(source_id, name, None if target == DROP else target, reason, number))
        if target == DROP and rows[-1].loose:
            raise DataError(f"{where}: {name!r} is dropped (-) but marked loose; a loose row maps to a VSPW class")
    if not rows:
        raise DataError(
            f"remapping table {path} has no rows; expected the header {' '.join(TABLE_HEADER)!r} "
            "and one line per source class"
        )
    by_target: dict[str, list[TableRow]] = defaultdict(list)
    for row in rows:
        if row.target is not None:
            by_target[row.target].append(row)
    for target, merged in by_target.items():
        unexplained = [row for row in merged if not row.reason]
        if len(merged) > 1 and unexplained:
            names = ", ".join(f"{row.source_name!r} (line {row.line})" for row in merged)
            raise DataError(
                f"remapping table {path}, line {unexplained[0].line}: {target!r} merges {names}; "
                "every row of a merge needs a reason"
            )
    return rows


class TableRemapper(LUTRemapper):
    """A remapper read from a table file; ``known`` marks the source values the table lists.

    Subclasses set ``table_file``: a name in ``remap_tables/`` or an absolute path. ``table``
    is the reading: ``strict`` maps the rows marked loose (see :attr:`TableRow.loose`) to 255,
    ``loose`` to their class. Only the COCO-Stuff table marks rows loose.
    """

    table_file: ClassVar[str]

    def __init__(self, min_labelled: float = 0.0, table: str = "strict"):
        if table not in TABLE_READINGS:
            raise ConfigError(
                f"remapper table {table!r} is not a reading of {self.table_file}; choose strict (only the "
                "table's exact matches; for COCO-Stuff the report's 131 classes) or loose (its looser matches too)"
            )
        super().__init__(min_labelled)
        self.table = table
        loose = table == "loose"
        self.table_path = TABLES_DIR / self.table_file
        self.rows = read_table(self.table_path)
        train_id = {name: index for index, name in enumerate(VSPW_CLASSES)}
        self.lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        self.known = np.zeros(256, dtype=bool)
        names = [""] * (max(row.source_id for row in self.rows) + 1)  # "" for values the table does not list
        for row in self.rows:
            if row.target is not None and (loose or not row.loose):
                self.lut[row.source_id] = train_id[row.target]
            self.known[row.source_id] = True
            names[row.source_id] = row.source_name
        self.source_classes = names


class COCOStuffRemapper(TableRemapper):
    """COCO-Stuff 164k (171 classes) -> VSPW train ids; table: strict (131 classes, the default) or loose (149).

    ``table: strict`` (the default) is the 3rd-place report's reading (2.2): 131 of COCO-Stuff's
    classes have a VSPW class, the other 41 (with "unlabeled") become 255. ``table: loose`` also
    maps the 18 looser matches marked ``loose`` in ``remap_tables/coco_stuff.tsv`` (explained in
    ``remap_tables/README``).
    """

    table_file = "coco_stuff.tsv"


class ADE20KRemapper(TableRemapper):
    """ADE20K SceneParsing (150 classes, 0 = other) -> VSPW train ids."""

    table_file = "ade20k.tsv"


class CityscapesRemapper(TableRemapper):
    """Cityscapes label ids (gtFine_labelIds, 0..33) -> VSPW train ids."""

    table_file = "cityscapes.tsv"
