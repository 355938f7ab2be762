# The plug-in used from a plain mmseg config: mmseg's DeepLabV3 R-50-D8 CityScapes recipe with RepL
# applied to its ResNetV1c backbone (`repl` takes the keys of repl.ReplConfig).
_base_ = ['mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py']
custom_imports = dict(imports=['repl.integrations.openmmlab'], allow_failed_imports=False)
model = dict(backbone=dict(type='ReplResNetV1c', repl=dict(ratio=0.25)))
