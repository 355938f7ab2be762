# Faster R-CNN R-50-FPN: mmdet's own model config, unchanged. `python train.py model=faster_rcnn_r50_fpn`
# builds it with num_classes from the dataset and applies repl.* to its backbone (docs/openmmlab.md).
_base_ = ['mmdet::_base_/models/faster-rcnn_r50_fpn.py']
