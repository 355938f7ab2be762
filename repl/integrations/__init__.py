"""Bridges to other frameworks. `openmmlab`: RepL backbones for mmdetection and mmsegmentation (optional extra)."""
