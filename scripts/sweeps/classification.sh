#!/usr/bin/env bash
# Table "classification": CIFAR-10, SVHN, STL-10 (ResNet-56 and pretrained ViT-B) and ImageNet
# (ResNet-50, plus the ViT-S extension row), each at RATIOS x SEEDS. Needs the datasets under
# $REPL_DATA (or dataset.root=...) and, for the ViT-B rows, timm's pretrained weights.
source "$(dirname "$0")/_common.sh"
table cifar10_resnet56 svhn_resnet56 stl10_resnet56 cifar10_vit_b svhn_vit_b stl10_vit_b imagenet_resnet50 imagenet_vit_s
