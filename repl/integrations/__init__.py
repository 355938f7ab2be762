"""Bridges to other frameworks. `openmmlab` (what mm configs import): RepL backbones for mmdetection and
mmsegmentation (optional extra); its parts are the `mm_*` modules beside it."""
