"""The ``maskformer-swin`` backbone: the backbone contract at odd sizes, its shifted-window mask, bad arguments.

Its equality with the official Swin (padding included) is tested through the official
fixture in test_import_d2.py and against transformers' MaskFormerSwin in test_import_hf.py.
"""

from __future__ import annotations

import pytest
import torch
from zoo_maskformer.swin import MASK_VALUE, MaskFormerSwin, shifted_window_mask

from zoo_core.errors import ConfigError
from zoo_core.testing import check_backbone

TINY = {"embed_dim": 8, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 2, 4], "window_size": 4, "drop_path_rate": 0.1}


def test_conformance():
    report = check_backbone(MaskFormerSwin, name="maskformer-swin", **TINY)
    assert report.kind == "backbone"


def test_strides_and_channels():
    model = MaskFormerSwin(**TINY)
    assert model.strides == [4, 8, 16, 32] and model.channels == [8, 16, 32, 64]
    maps = model.eval()(torch.randn(1, 3, 45, 70))
    assert [tuple(m.shape[2:]) for m in maps] == [(12, 18), (6, 9), (3, 5), (2, 3)]


def test_shifted_window_mask_by_hand():
    # an 4x4 map in one 4x4 window, shift 2: after the roll, rows/cols 0-1 and 2-3 came from apart
    mask = shifted_window_mask(4, 4, window=4, shift=2, device=torch.device("cpu"))
    assert mask.shape == (1, 16, 16)
    region = [(r >= 2) * 3 + (c >= 2) for r in range(4) for c in range(4)]  # 4 quadrants
    expected = torch.tensor([[0.0 if a == b else MASK_VALUE for b in region] for a in region])
    assert torch.equal(mask[0], expected)
    # windows away from the bottom/right edge are not masked
    assert (shifted_window_mask(8, 8, window=4, shift=2, device=torch.device("cpu"))[0] == 0).all()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"num_heads": [1, 2, 3, 4]}, "num_heads"),
        ({"depths": [2, 0, 2, 2]}, "depths"),
        ({"window_size": 0}, "window_size"),
        ({"drop_path_rate": 1.5}, "drop_path_rate"),
    ],
)
def test_bad_arguments_are_named(args, named):
    with pytest.raises(ConfigError, match=named):
        MaskFormerSwin(**{**TINY, **args})
