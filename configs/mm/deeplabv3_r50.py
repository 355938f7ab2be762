# DeepLabV3 R-50-D8: mmseg's own model config. `python train.py model=deeplabv3_r50` builds it with
# num_classes from the dataset and applies repl.* to its backbone (docs/openmmlab.md).
# SyncBN -> BN: one process (mmseg's advice for single-GPU training); set it back through
# model.kwargs.options for multi-GPU runs.
_base_ = ['mmseg::_base_/models/deeplabv3_r50-d8.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))
