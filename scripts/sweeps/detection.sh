#!/usr/bin/env bash
# Table "detection": Faster R-CNN R50-FPN on COCO (needs the openmmlab extra and COCO under $REPL_DATA/coco).
source "$(dirname "$0")/_common.sh"
table coco_faster_rcnn_r50_fpn
