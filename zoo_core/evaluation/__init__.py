"""Official VSPW evaluation: streaming mIoU (confusion matrix) and video consistency mVC."""

from .confusion import read_confusion, write_confusion
from .evaluator import StreamingEvaluator, VideoStats
from .metrics import summarize
from .predictions import read_prediction

__all__ = ["StreamingEvaluator", "VideoStats", "read_confusion", "read_prediction", "summarize", "write_confusion"]
