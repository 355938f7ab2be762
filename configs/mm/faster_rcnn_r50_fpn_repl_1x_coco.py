# The plug-in used from a plain mmdet config (mmdet's tools/train.py, mim train, your own scripts):
# mmdet's Faster R-CNN 1x COCO recipe with RepL applied to its ResNet-50 backbone. `repl` takes the
# keys of repl.ReplConfig (ratio, select, fusion, adapt, surrogate, neighbor_grad, ...).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['repl.integrations.openmmlab'], allow_failed_imports=False)
model = dict(backbone=dict(type='ReplResNet', repl=dict(ratio=0.25)))
