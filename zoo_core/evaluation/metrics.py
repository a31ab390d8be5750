"""Semantic segmentation metrics from one streaming confusion matrix (the official VSPW mIoU)."""

from __future__ import annotations

import numpy as np

from ..errors import DataError


def check_prediction(pred: np.ndarray, gt: np.ndarray, num_classes: int, source: str = "") -> np.ndarray:
    """Return ``pred`` as uint8, checked to be train ids ``0..num_classes-1`` of ``gt``'s size.

    Integer arrays of any dtype are accepted (a model's argmax is int64); the values decide.
    ``source`` (a file name, or video and frame) starts the error message.
    """
    source = source or "prediction"
    pred = np.asarray(pred)
    if pred.ndim != 2 or not np.issubdtype(pred.dtype, np.integer):
        raise DataError(
            f"{source}: expected a 2-D map of integer train ids, got {pred.ndim}-D {pred.dtype}; "
            "save one single-channel PNG of train ids per frame"
        )
    if pred.shape != gt.shape:
        raise DataError(
            f"{source}: prediction size {pred.shape[0]}x{pred.shape[1]} does not match the ground "
            f"truth {gt.shape[0]}x{gt.shape[1]}; predict at the mask's resolution"
        )
    if pred.size and (pred.max() >= num_classes or pred.min() < 0):
        bad = np.unique(pred[(pred < 0) | (pred >= num_classes)])
        shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise DataError(
            f"{source}: prediction values {shown} are outside the train ids 0..{num_classes - 1}; "
            "predictions hold train ids (raw VSPW id - 1), not raw ids, colours or the ignore "
            "value 255"
        )
    return pred.astype(np.uint8, copy=False)


def frame_confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """One frame's ``C x C`` int64 counts (rows = ground truth, columns = prediction).

    ``pred`` is uint8 below ``num_classes`` (see :func:`check_prediction`); ``gt`` is uint8
    train ids and only pixels with ``gt < num_classes`` count. The index ``gt * C + pred`` is
    computed in uint16 on *all* pixels and binned into 256 rows: ignored ground truth (255)
    lands in rows past ``C`` that are cut off, about twice as fast as selecting the valid
    pixels first. ``np.bincount`` is used rather than ``torch.bincount``: the latter is
    slightly faster on an idle machine with one thread, but several times slower when its
    threads compete with model inference for the cores.
    """
    c = num_classes
    # 255 * C + C - 1 < 2**16 for C <= 255, so the uint16 index cannot overflow.
    index = gt.astype(np.uint16)
    index *= c
    index += pred
    counts = np.bincount(index.ravel(), minlength=256 * c)
    return counts[: c * c].reshape(c, c)


def summarize(cm: np.ndarray, class_names: list[str]) -> dict:
    """The segmentation metrics of a confusion matrix, as fractions in ``0..1``.

    Returns ``miou``, ``pixel_acc``, ``mean_class_acc``, ``fwiou`` and ``per_class_iou``
    (name -> IoU, ``None`` for classes absent from the ground truth). Averages run over the
    classes present in the ground truth only (``rowsum > 0``), as the official script does;
    a present class that is never predicted correctly counts 0. With no counted pixel at
    all, the averages are ``None``.
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix of shape {cm.shape} does not fit {len(class_names)} class names")
    rows = cm.sum(axis=1).astype(np.float64)
    total = rows.sum()
    if total == 0:
        return {
            "miou": None,
            "pixel_acc": None,
            "mean_class_acc": None,
            "fwiou": None,
            "per_class_iou": dict.fromkeys(class_names),
        }
    diag = np.diag(cm).astype(np.float64)
    cols = cm.sum(axis=0).astype(np.float64)
    present = rows > 0
    # For present classes union >= rowsum > 0; absent classes stay NaN and are reported as None.
    iou = np.divide(diag, rows + cols - diag, out=np.full_like(diag, np.nan), where=present)
    return {
        "miou": float(iou[present].mean()),
        "pixel_acc": float(diag.sum() / total),
        "mean_class_acc": float((diag[present] / rows[present]).mean()),
        "fwiou": float((rows[present] / total * iou[present]).sum()),
        "per_class_iou": {name: (float(v) if ok else None) for name, v, ok in zip(class_names, iou, present)},
    }
