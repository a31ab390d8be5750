"""Remappers of COCO-Stuff, ADE20K and Cityscapes: the shipped tables, the lookup, table checking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zoo_core.components.remappers import (
    ADE20KRemapper,
    CityscapesRemapper,
    COCOStuffRemapper,
    TableRemapper,
    read_table,
)
from zoo_core.data.classes import VSPW_CLASSES
from zoo_core.errors import DataError
from zoo_core.plugins import get_catalog

REMAPPERS = (COCOStuffRemapper, ADE20KRemapper, CityscapesRemapper)

# Train ids counted by hand in the VSPW list (raw id - 1).
PERSON, CAR, WALL, OTHER_ANIMAL, CATTLE, TUB_OR_BOWL_OR_POT, WOOD, FLAG, PATH = 60, 48, 0, 65, 64, 83, 31, 43, 19


def _by_name(remapper) -> dict[str, int]:
    """Source class name -> the train id the lookup table gives it."""
    return {row.source_name: int(remapper.lut[row.source_id]) for row in remapper.rows}


def test_tables_load_and_cover_their_dataset():
    coco, ade, city = COCOStuffRemapper(), ADE20KRemapper(), CityscapesRemapper()
    # COCO-Stuff: PNG value = category id - 1; these category ids are unused (VSPW.md).
    unused = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}
    assert sorted(row.source_id for row in coco.rows) == [v for v in range(182) if v not in unused] + [255]
    assert sorted(row.source_id for row in ade.rows) == list(range(151))
    assert sorted(row.source_id for row in city.rows) == list(range(34))
    for remapper in (coco, ade, city):
        assert remapper.lut.shape == (256,) and remapper.lut.dtype == np.uint8
        assert all(v < len(VSPW_CLASSES) or v == 255 for v in remapper.lut.tolist())
        assert all(row.reason for row in remapper.rows if row.target is None)  # every drop explained
    # Values a table does not list are ignored and flagged as unknown.
    assert coco.lut[11] == 255 and not coco.known[11] and coco.known[255]
    assert (
        coco.source_classes[0] == "person" and coco.source_classes[11] == "" and coco.source_classes[255] == "unlabeled"
    )


def test_coco_stuff_spot_checks():
    coco = COCOStuffRemapper()
    names = _by_name(coco)
    assert VSPW_CLASSES[PERSON] == "person" and names["person"] == PERSON
    assert coco.lut[0] == PERSON  # person is category 1 -> value 0
    assert names["cow"] == CATTLE and VSPW_CLASSES[CATTLE] == "cattle"
    for animal in ("sheep", "elephant", "bear", "zebra", "giraffe", "bird"):
        assert names[animal] == OTHER_ANIMAL, animal
    assert names["bowl"] == TUB_OR_BOWL_OR_POT and VSPW_CLASSES[TUB_OR_BOWL_OR_POT] == "tub_or_bowl_or_pot"
    assert names["fire hydrant"] == 255 and names["unlabeled"] == 255
    assert all(
        names[f"wall-{kind}"] == WALL for kind in ("brick", "concrete", "other", "panel", "stone", "tile", "wood")
    )
    # Ids follow the COCO category ids: stop sign is category 13, toothbrush 90, wood 182.
    rows = {row.source_name: row.source_id for row in coco.rows}
    assert (rows["fire hydrant"], rows["stop sign"], rows["toothbrush"], rows["banner"], rows["wood"]) == (
        10,
        12,
        89,
        91,
        181,
    )
    assert coco.lut[181] == WOOD and VSPW_CLASSES[WOOD] == "wood"


def test_ade20k_spot_checks():
    ade = ADE20KRemapper()
    names = _by_name(ade)
    assert ade.lut[0] == 255  # "other"
    assert ade.lut[1] == WALL and ade.lut[13] == PERSON and ade.lut[150] == FLAG
    assert names["car"] == names["van"] == CAR
    assert names["sidewalk"] == PATH and names["animal"] == 255


# Cityscapes' 19 evaluated classes by label id (VSPW.md), and the VSPW class each becomes.
CITYSCAPES_EVALUATED = {
    7: ("road", "road"),
    8: ("sidewalk", "path"),
    11: ("building", "building"),
    12: ("wall", "wall"),
    13: ("fence", "handrail_or_fence"),
    17: ("pole", "pole"),
    19: ("traffic light", "traffic_light"),
    20: ("traffic sign", "billboard_or_Bulletin_Board"),
    21: ("vegetation", "tree"),
    22: ("terrain", "grass"),
    23: ("sky", "sky"),
    24: ("person", "person"),
    25: ("rider", "person"),
    26: ("car", "car"),
    27: ("truck", "truck"),
    28: ("bus", "bus"),
    31: ("train", "train"),
    32: ("motorcycle", "motorcycle"),
    33: ("bicycle", "bicycle"),
}


def test_cityscapes_maps_label_ids():
    city = CityscapesRemapper()
    for label_id, (name, vspw) in CITYSCAPES_EVALUATED.items():
        assert city.source_classes[label_id] == name
        assert city.lut[label_id] == VSPW_CLASSES.index(vspw), name
    assert city.lut[0] == city.lut[1] == 255  # unlabeled, ego vehicle


def test_cityscapes_table_agrees_with_cityscapesscripts():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    evaluated = {label.id: label.name for label in labels.labels if 0 <= label.trainId < 19}
    assert evaluated == {label_id: name for label_id, (name, _) in CITYSCAPES_EVALUATED.items()}
    city = CityscapesRemapper()
    assert {label.id: label.name for label in labels.labels if label.id >= 0} == {
        row.source_id: row.source_name for row in city.rows
    }


@pytest.mark.parametrize("factory", REMAPPERS)
def test_lut_equals_a_per_pixel_lookup(factory):
    remapper = factory()
    dropped = lambda row: row.target is None or (row.loose and remapper.table == "strict")
    table = {row.source_id: 255 if dropped(row) else VSPW_CLASSES.index(row.target) for row in remapper.rows}
    raw = np.random.default_rng(0).integers(0, 256, size=(64, 96), dtype=np.uint8)
    expected = np.array([[table.get(int(v), 255) for v in line] for line in raw], dtype=np.uint8)
    assert np.array_equal(remapper(raw), expected)
    assert torch.equal(remapper(torch.from_numpy(raw)), torch.from_numpy(expected))


def test_filter_keeps_80_percent_labelled():
    coco = COCOStuffRemapper(min_labelled=0.8)
    raw = np.full(100, 255, dtype=np.uint8)  # 255: unlabeled
    raw[:79] = 0  # person
    assert not coco.keep(coco(raw))
    raw[79] = 10  # fire hydrant: labelled in COCO, dropped by the remapping
    assert not coco.keep(coco(raw))
    raw[79] = 2  # car
    assert coco.keep(coco(raw))
    assert COCOStuffRemapper().keep(coco(np.full(4, 255, dtype=np.uint8)))  # the class default keeps everything


def test_catalog_names():
    catalog = get_catalog()
    assert {"vspw", "coco-stuff", "ade20k", "cityscapes"} <= set(catalog.names("remapper"))
    remapper = catalog.build("remapper", "ade20k", {"min_labelled": 0.8})
    assert isinstance(remapper, ADE20KRemapper) and remapper.min_labelled == 0.8


# -- malformed tables ---------------------------------------------------------------------

HEADER = "# a comment\nid\tname\tvspw\treason\n"


@pytest.mark.parametrize(
    "body, line, message",
    [
        ("0\tcar\tcar\t\n1\tbus\tbuss\t\n", 4, "'buss' is not a VSPW class.*did you mean bus"),
        ("0\tcar\tcar\t\n0\tvan\tcar\tmerge: vans\n", 4, "id 0 is already listed on line 3"),
        ("256\tcar\tcar\t\n", 3, "id 256 is outside 0..255"),
        ("x\tcar\tcar\t\n", 3, "id 'x' is not an integer"),
        ("0\thydrant\t-\t\n", 3, "'hydrant' is dropped \\(-\\) without a reason"),
        (
            "0\tcar\tcar\t\n1\tvan\tcar\tmerge: vans are cars\n",
            3,
            "'car' merges 'car' \\(line 3\\), 'van' \\(line 4\\)",
        ),
        ("0\tcar\n", 3, "expected 4 tab-separated fields"),
    ],
)
def test_malformed_table_names_file_and_line(tmp_path: Path, body: str, line: int, message: str):
    path = tmp_path / "bad.tsv"
    path.write_text(HEADER + body, encoding="utf-8")
    with pytest.raises(DataError, match=f"bad.tsv, line {line}: {message}"):
        read_table(path)


def test_table_without_header_or_rows(tmp_path: Path):
    path = tmp_path / "bad.tsv"
    path.write_text("0\tcar\tcar\t\n", encoding="utf-8")
    with pytest.raises(DataError, match="bad.tsv, line 1: expected the tab-separated header"):
        read_table(path)
    path.write_text(HEADER, encoding="utf-8")
    with pytest.raises(DataError, match="bad.tsv has no rows"):
        read_table(path)


def test_own_table_through_a_subclass(tmp_path: Path):
    path = tmp_path / "mine.tsv"
    # The reason column may lose its trailing tab in an editor.
    path.write_text(HEADER + "3\tvan\tcar\tmerge: vans are cars\n5\tsedan\tcar\tmerge: sedans are cars\n7\tdog\tdog\n")

    class Mine(TableRemapper):
        table_file = str(path)  # an absolute path is used as is

    remapper = Mine()
    assert remapper.lut[3] == remapper.lut[5] == CAR and remapper.lut[7] == VSPW_CLASSES.index("dog")
    assert remapper.source_classes == ["", "", "", "van", "", "sedan", "", "dog"]
    assert (remapper.lut != 255).sum() == 3
