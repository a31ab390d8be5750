"""The two readings of the COCO-Stuff table: strict (the 3rd-place report's 131 classes) and loose (149)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from zoo_core.components.remappers import TABLES_DIR, ADE20KRemapper, COCOStuffRemapper, read_table
from zoo_core.data.classes import VSPW_CLASSES
from zoo_core.errors import ConfigError, DataError
from zoo_core.pipeline.schema import SourceSpec

# The 18 looser matches, as remap_tables/README lists them.
LOOSE = {
    "stop sign": "billboard_or_Bulletin_Board",
    "parking meter": "other_machine",
    "potted plant": "other_plant",
    "scissors": "tool",
    "banner": "billboard_or_Bulletin_Board",
    "cardboard": "box",
    "counter": "table_or_desk",
    "napkin": "tissue",
    "net": "ball_net",
    "pavement": "path",
    "structural-other": "other_construction",
    "oven": "roaster",
    "frisbee": "toy",
    "kite": "toy",
    "tennis racket": "bat",
    "hair drier": "other_electronic_product",
    "window-blind": "curtain",
    "hill": "mountain",
}


def mapped(remapper) -> dict[str, str]:
    """COCO class name -> VSPW class name, for the classes the remapper does not send to 255."""
    return {
        row.source_name: VSPW_CLASSES[remapper.lut[row.source_id]]
        for row in remapper.rows
        if remapper.lut[row.source_id] != 255
    }


def test_strict_maps_the_reports_131_classes_and_loose_149():
    strict, loose = COCOStuffRemapper(), COCOStuffRemapper(table="loose")
    assert strict.table == "strict"  # the default: the report's reading
    # 2.2: "Among all 172 classes, 131 classes have their corresponding class in VSPW, [...] another 41 [...] 255"
    assert len(strict.rows) == 172 and len(mapped(strict)) == 131 and len(strict.rows) - 131 == 41
    assert len(mapped(loose)) == 149
    assert {name: vspw for name, vspw in mapped(loose).items() if name not in mapped(strict)} == LOOSE
    assert all(mapped(loose)[name] == vspw for name, vspw in mapped(strict).items())


def test_specific_classes_in_each_reading():
    strict, loose = COCOStuffRemapper(), COCOStuffRemapper(table="loose")
    raw = np.array([[12, 78, 126, 0], [20, 87, 134, 255]], dtype=np.uint8)  # stop sign, oven, hill, person; cow, ...
    names = lambda remapper: [[VSPW_CLASSES[v] if v != 255 else "-" for v in row] for row in remapper(raw).tolist()]
    assert names(strict) == [["-", "-", "-", "person"], ["cattle", "toy", "mountain", "-"]]
    assert names(loose) == [["billboard_or_Bulletin_Board", "roaster", "mountain", "person"], names(strict)[1]]
    # a strict reading keeps fewer pixels labelled, so the 80% filter drops more images
    assert not COCOStuffRemapper(min_labelled=0.8).keep(strict(raw))
    assert COCOStuffRemapper(min_labelled=0.8, table="loose").keep(loose(raw))


def test_every_loose_row_is_explained_in_the_readme():
    rows = [row for row in read_table(TABLES_DIR / "coco_stuff.tsv") if row.loose]
    assert len(rows) == 18
    readme = (TABLES_DIR / "README").read_text(encoding="utf-8")
    for row in rows:
        assert re.search(rf"\| {row.source_id} \| {re.escape(row.source_name)} \| `{row.target}` \|", readme), row
    assert not [row for row in read_table(TABLES_DIR / "ade20k.tsv") if row.loose]  # only COCO-Stuff has readings
    assert (ADE20KRemapper(table="strict").lut == ADE20KRemapper(table="loose").lut).all()


def test_bad_readings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="table 'medium' is not a reading of coco_stuff.tsv; choose strict"):
        COCOStuffRemapper(table="medium")
    with pytest.raises(ValueError, match="'strict' or 'loose'"):
        SourceSpec(type="coco-stuff", table="medium")
    table = tmp_path / "t.tsv"
    table.write_text("id\tname\tvspw\treason\n3\tfoo\t-\tloose: no class\n")
    with pytest.raises(DataError, match=r"t.tsv, line 2: 'foo' is dropped \(-\) but marked loose"):
        read_table(table)


def test_a_source_chooses_the_reading(tmp_path, monkeypatch):
    """``train.sources[].table`` reaches the remapper: with the 80% filter, an image of stop signs and persons is
    kept only by the loose reading (an image of persons by both); its mask holds the bulletin board only there."""
    from test_sources import make_coco

    from zoo_core.data.sources import build_train_set

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    label = np.full((10, 10), 0, dtype=np.uint8)  # person
    label[:3] = 12  # stop sign on 30% of the pixels
    root = make_coco(tmp_path / "coco", {"train2017": [label, np.zeros_like(label)]})
    kept = {}
    for table in ("strict", "loose"):
        source = SourceSpec(type="coco-stuff", root=root, table=table, min_labelled=0.8)
        kept[table] = len(build_train_set([source], None, None, 0, progress=False))
        mask = build_train_set([SourceSpec(type="coco-stuff", root=root, table=table)], None, None, 0, progress=False)
        assert set(np.unique(mask.parts[0].dataset.load(0)[1]).tolist()) == (
            {60, 255} if table == "strict" else {60, VSPW_CLASSES.index("billboard_or_Bulletin_Board")}
        )
    assert kept == {"strict": 1, "loose": 2}
