#!/usr/bin/env bash
# Table "segmentation": DeepLabV3 R50 on CityScapes (needs the openmmlab extra and CityScapes under $REPL_DATA/cityscapes).
source "$(dirname "$0")/_common.sh"
table cityscapes_deeplabv3_r50
