"""Official VSPW evaluation: streaming mIoU (confusion matrix) and video consistency mVC."""

from .evaluator import StreamingEvaluator, VideoStats
from .metrics import summarize
from .predictions import read_prediction

__all__ = ["StreamingEvaluator", "VideoStats", "read_prediction", "summarize"]
