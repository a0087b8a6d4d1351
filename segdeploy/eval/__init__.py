"""segeval's package: datasets, exact confusion matrices and mIoU of engines (device side).

    from segdeploy.eval import evaluate, open_dataset
    report = evaluate("out/regseg.onnx", open_dataset("cityscapes", "data/cityscapes"))
    report.miou, report.class_iou(), report.pixel_accuracy, report.fwiou

``compare([engine, ...], dataset)`` scores several engines on the same images and adds each
pair's mIoU difference, label agreement and the images where they disagree most. Importing this
package costs numpy only; OpenCV is imported when a dataset is opened. Python 3.6 compatible.
"""

from .data import DatasetError, open_dataset
from .evaluate import Comparison, Report, compare, evaluate
from .metrics import ConfusionMatrix

__all__ = [
    "Comparison",
    "ConfusionMatrix",
    "DatasetError",
    "Report",
    "compare",
    "evaluate",
    "open_dataset",
]
