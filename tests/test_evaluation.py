"""Official VSPW metrics: hand-computed cases and a plain transcription of the official loops."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from zoo_core.errors import DataError
from zoo_core.evaluation.consistency import VideoConsistency
from zoo_core.evaluation.evaluator import StreamingEvaluator, VideoStats
from zoo_core.evaluation.metrics import frame_confusion, summarize
from zoo_core.evaluation.predictions import read_prediction

U8 = np.uint8


# ---------------------------------------------------------------- references (official code, transcribed)


def official_confusion(preds, gts, num_classes):
    """Per frame: keep ground truth 0..C-1, then bincount(C * gt + pred)."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    for pred, gt in zip(preds, gts):
        keep = gt < num_classes
        index = num_classes * gt[keep].astype(np.int64) + pred[keep]
        cm += np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)
    return cm


def official_miou(cm):
    ious = []
    for c in range(cm.shape[0]):
        if cm[c].sum() == 0:
            continue
        ious.append(cm[c, c] / (cm[c].sum() + cm[:, c].sum() - cm[c, c]))
    return float(np.mean(ious))


def get_common(gts, preds, clip_num):
    """The official mVC loop for one video: the start len - clip_num is not used."""
    accs = []
    h, w = gts[0].shape
    for i in range(len(gts) - clip_num):
        global_common = np.ones((h, w))
        pred_global_common = np.ones((h, w))
        for j in range(1, clip_num):
            common = gts[i] == gts[i + j]
            global_common = np.logical_and(global_common, common)
            pred_common = preds[i] == preds[i + j]
            pred_global_common = np.logical_and(pred_global_common, pred_common)
        pred = pred_global_common * global_common
        with np.errstate(invalid="ignore", divide="ignore"):
            accs.append(pred.sum() / global_common.sum())
    return accs


def official_mvc(videos, clip_num):
    """nanmean over all windows of all videos; videos with N <= clip_num are skipped."""
    accs = []
    for gts, preds in videos:
        if len(gts) <= clip_num:
            continue
        accs += get_common(gts, preds, clip_num)
    valid = [a for a in accs if not np.isnan(a)]
    return float(np.mean(valid)) if valid else None


def evaluate(videos, num_classes=3, windows=(8, 16)):
    evaluator = StreamingEvaluator(num_classes, windows)
    for index, (gts, preds) in enumerate(videos):
        evaluator.start_video(f"video{index}")
        for gt, pred in zip(gts, preds):
            evaluator.update(pred, gt)
        evaluator.end_video()
    return evaluator


def random_video(rng, frames, shape=(6, 7), values=(0, 1, 2, 255), change=0.08):
    """Piecewise-constant label sequences per pixel, so some windows are stable and some not."""
    sequence = [rng.choice(values, size=shape).astype(U8)]
    for _ in range(frames - 1):
        changed = rng.random(shape) < change
        sequence.append(np.where(changed, rng.choice(values, size=shape), sequence[-1]).astype(U8))
    return sequence


# ---------------------------------------------------------------- confusion-matrix metrics


def test_three_class_case_by_hand():
    gt = np.array([[0, 0, 0, 1], [1, 2, 2, 255]], U8)
    pred = np.array([[0, 0, 1, 1], [2, 2, 0, 1]], U8)
    cm = frame_confusion(pred, gt, 3)
    # The (255, 1) pixel is not counted.
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 1, 1], [1, 0, 1]])
    result = summarize(cm, ["a", "b", "c"])
    # IoU: a 2/(3+3-2) = 1/2, b 1/(2+2-1) = 1/3, c 1/(2+2-1) = 1/3.
    assert result["per_class_iou"] == pytest.approx({"a": 1 / 2, "b": 1 / 3, "c": 1 / 3})
    assert result["miou"] == pytest.approx(7 / 18)
    assert result["pixel_acc"] == pytest.approx(4 / 7)
    assert result["mean_class_acc"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    assert result["fwiou"] == pytest.approx(3 / 7 * 1 / 2 + 2 / 7 * 1 / 3 + 2 / 7 * 1 / 3)


def test_classes_absent_from_ground_truth_are_excluded():
    gt = np.array([[0, 0, 2], [1, 1, 2]], U8)
    pred = np.array([[0, 3, 0], [1, 1, 0]], U8)
    result = summarize(frame_confusion(pred, gt, 4), ["a", "b", "c", "d"])
    # a: 1/(2+3-1); b: 2/2; c is in the ground truth but never right: 0; d only predicted: absent.
    assert result["per_class_iou"] == {"a": 0.25, "b": 1.0, "c": 0.0, "d": None}
    assert result["miou"] == pytest.approx((0.25 + 1 + 0) / 3)


def test_empty_confusion_matrix_gives_none():
    result = summarize(np.zeros((2, 2), np.int64), ["a", "b"])
    assert result == {
        "miou": None,
        "pixel_acc": None,
        "mean_class_acc": None,
        "fwiou": None,
        "per_class_iou": {"a": None, "b": None},
    }


def test_confusion_and_miou_match_official_code_on_random_frames():
    rng = np.random.default_rng(0)
    num_classes = 124
    gts = [rng.choice([*range(num_classes), 255], size=(48, 64)).astype(U8) for _ in range(5)]
    preds = [
        np.where(rng.random(gt.shape) < 0.6, np.minimum(gt, 123), rng.integers(0, 124, gt.shape)).astype(U8)
        for gt in gts
    ]
    evaluator = evaluate([(gts, preds)], num_classes)
    expected = official_confusion(preds, gts, num_classes)
    np.testing.assert_array_equal(evaluator.confusion_matrix, expected)
    result = evaluator.result([str(c) for c in range(num_classes)])
    assert result["miou"] == pytest.approx(official_miou(expected), rel=1e-12)
    assert result["pixel_acc"] == pytest.approx(np.trace(expected) / expected.sum(), rel=1e-12)


def test_prediction_out_of_range_names_the_source():
    evaluator = StreamingEvaluator(num_classes=3)
    evaluator.start_video("v")
    gt = np.zeros((2, 2), U8)
    with pytest.raises(DataError, match=r"v/00000001\.png: prediction values 3, 255 are outside .*0\.\.2"):
        evaluator.update(np.array([[0, 3], [255, 1]], U8), gt, source="v/00000001.png")
    with pytest.raises(DataError, match=r"f\.png: prediction size 2x3 does not match the ground truth 2x2"):
        evaluator.update(np.zeros((2, 3), U8), gt, source="f.png")


def test_int64_predictions_are_accepted_and_checked():
    gt = np.array([[0, 1]], U8)
    evaluator = StreamingEvaluator(num_classes=2)
    evaluator.start_video("v")
    evaluator.update(np.array([[0, 0]], np.int64), gt)
    with pytest.raises(DataError, match="-1"):
        evaluator.update(np.array([[-1, 0]], np.int64), gt)
    evaluator.end_video()
    np.testing.assert_array_equal(evaluator.confusion_matrix, [[1, 0], [1, 0]])


def test_views_and_read_only_arrays_count_like_copies():
    rng = np.random.default_rng(3)
    gt = rng.choice([0, 1, 2, 255], size=(5, 7)).astype(U8)
    pred = rng.integers(0, 3, size=(5, 7)).astype(U8)
    expected = official_confusion([pred.T[::-1]], [gt.T[::-1]], 3)
    gt.flags.writeable = False
    np.testing.assert_array_equal(frame_confusion(pred.T[::-1], gt.T[::-1], 3), expected)


# ---------------------------------------------------------------- video consistency


def constant_video(frames, gt_value=0, pred_value=0, shape=(2, 2)):
    return (
        [np.full(shape, gt_value, U8) for _ in range(frames)],
        [np.full(shape, pred_value, U8) for _ in range(frames)],
    )


def test_mvc_counts_windows_up_to_the_unused_last_start():
    # N = 10, C = 8: starts 0 and 1 (frames 0..7 and 1..8), each perfectly consistent.
    consistency = VideoConsistency((8,))
    for gt, pred in zip(*constant_video(10)):
        consistency.update(pred, gt)
    assert consistency.finish() == ({8: 2.0}, {8: 2})


def test_mvc_ignores_the_window_ending_at_the_last_frame():
    # N = 9, C = 8: only start 0 (frames 0..7). The prediction of pixel 0 changes between
    # frames 0 and 1, so that window scores 3/4; the window 1..8 (which would score 1) is unused.
    gts, preds = constant_video(9)
    preds[0] = np.array([[1, 0], [0, 0]], U8)
    result = evaluate([(gts, preds)]).result(["a", "b", "c"])
    assert result["mvc8"] == pytest.approx(0.75)
    assert result["mvc16"] is None  # N <= 16: no window at all


def test_mvc_skips_videos_not_longer_than_the_window():
    result = evaluate([constant_video(8), constant_video(16)]).result(["a", "b", "c"])
    assert result["mvc8"] == pytest.approx(1.0)  # only the 16-frame video has 8-frame windows
    assert result["mvc16"] is None


def test_mvc_is_a_mean_over_all_windows_not_over_videos():
    # Video A (10 frames): 2 windows scoring 1. Video B (9 frames): 1 window where only pixel 0
    # of four keeps its prediction: 1/4. Over windows (1 + 1 + 1/4) / 3; over videos it would be 5/8.
    gts_b, preds_b = constant_video(9)
    for t in range(9):
        preds_b[t] = np.array([[0, t % 2, t % 2, t % 2]], U8).reshape(2, 2)
    result = evaluate([constant_video(10), (gts_b, preds_b)]).result(["a", "b", "c"])
    assert result["mvc8"] == pytest.approx(0.75)


def test_mvc_drops_windows_without_stable_ground_truth_and_keeps_255_as_a_value():
    flicker = [np.full((2, 2), t % 2, U8) for t in range(10)]
    unstable = (flicker, [np.zeros((2, 2), U8)] * 10)  # no stable ground truth: NaN windows, dropped
    assert evaluate([unstable]).result(["a", "b", "c"])["mvc8"] is None
    # Ground truth that stays 255 is stable: the official code compares raw values, ignore included.
    void = (constant_video(10, gt_value=255)[0], flicker)
    assert evaluate([void, unstable]).result(["a", "b", "c"])["mvc8"] == pytest.approx(0.0)


@pytest.mark.parametrize("seed", range(4))
def test_streaming_mvc_matches_official_loops(seed):
    rng = np.random.default_rng(seed)
    videos = []
    # The last video's ground truth changes so often that some windows have no stable pixel (NaN).
    for frames, change in zip(rng.integers(3, 40, size=7), (0.05,) * 6 + (0.6,)):
        gts = random_video(rng, frames, change=change)
        preds = [np.where(g == 255, 0, g).astype(U8) for g in random_video(rng, frames, values=(0, 1, 2), change=0.1)]
        videos.append((gts, preds))
    videos.append(constant_video(17))  # exactly one 16-frame window
    result = evaluate(videos).result(["a", "b", "c"])
    for clip in (8, 16):
        expected = official_mvc(videos, clip)
        assert expected is not None
        assert result[f"mvc{clip}"] == pytest.approx(expected, rel=1e-12), clip
    np.testing.assert_array_equal(
        evaluate(videos).confusion_matrix,
        official_confusion([p for _, ps in videos for p in ps], [g for gs, _ in videos for g in gs], 3),
    )


def test_frame_size_change_inside_a_video_is_a_data_error():
    evaluator = StreamingEvaluator(num_classes=3)
    evaluator.start_video("v")
    evaluator.update(np.zeros((2, 2), U8), np.zeros((2, 2), U8))
    with pytest.raises(DataError, match=r"v/2\.png: frame size 3x2 differs .* video v \(2x2\)"):
        evaluator.update(np.zeros((3, 2), U8), np.zeros((3, 2), U8), source="v/2.png")


# ---------------------------------------------------------------- saved statistics (resume)


def test_saved_video_stats_resume_to_the_same_result(tmp_path):
    rng = np.random.default_rng(7)
    videos = [(random_video(rng, n), random_video(rng, n, values=(0, 1, 2))) for n in (20, 12, 30)]
    names = ["a", "b", "c"]
    expected = evaluate(videos).result(names)

    first = StreamingEvaluator(3)
    for index, (gts, preds) in enumerate(videos[:2]):
        first.start_video(str(index))
        for gt, pred in zip(gts, preds):
            first.update(pred, gt)
        first.end_video().save(tmp_path / f"{index}.npz")
    resumed = StreamingEvaluator(3)
    for index in range(2):
        resumed.add(VideoStats.load(tmp_path / f"{index}.npz"))
    resumed.start_video("2")
    for gt, pred in zip(*videos[2]):
        resumed.update(pred, gt)
    resumed.end_video()

    assert resumed.result(names) == expected
    assert (resumed.evaluated_videos, resumed.evaluated_frames) == (3, 62)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.npz", "1.npz"]  # no temporary files left


def test_corrupt_stats_file_is_a_data_error(tmp_path):
    path = tmp_path / "v.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="v.npz.*delete it"):
        VideoStats.load(path)


# ---------------------------------------------------------------- prediction files


def test_read_prediction_palette_and_grey(tmp_path):
    ids = np.array([[0, 5], [123, 7]], U8)
    palette = Image.fromarray(ids, mode="P")
    palette.putpalette([255, 0, 0] * 256)  # every index the same colour: the index must be read
    palette.save(tmp_path / "p.png")
    Image.fromarray(ids, mode="L").save(tmp_path / "l.png")
    for name in ("p.png", "l.png"):
        read = read_prediction(tmp_path / name)
        assert read.dtype == U8
        np.testing.assert_array_equal(read, ids)


def test_read_prediction_rejects_bad_files(tmp_path):
    Image.fromarray(np.zeros((2, 2, 3), U8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"rgb\.png: .*mode 'RGB' \(3 channels"):
        read_prediction(tmp_path / "rgb.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png: .*0 bytes"):
        read_prediction(tmp_path / "empty.png")
    Image.fromarray(np.zeros((64, 64), U8)).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(DataError, match=r"cut\.png: cannot read"):
        read_prediction(tmp_path / "cut.png")
    with pytest.raises(DataError, match=r"missing\.png: prediction file not found"):
        read_prediction(tmp_path / "missing.png")
