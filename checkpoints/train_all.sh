#!/usr/bin/env bash
# Trains the committed checkpoints on the JPEG CIFAR-10 train split (../shared/data/cifar10), 2 CPU cores.
# ResNet-8 takes raw 0-255 pixels (scaled inside the model), so its QAT needs a 10x smaller lr.
# Each command's line, accuracy and data hash land in manifest.json. Existing checkpoints are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
run() { local out=$1; shift; [ -f "$out" ] && { echo "have $out"; return; }; echo "== $out"; fames train "$@" --out "$out" --manifest checkpoints/manifest.json; }
run checkpoints/resnet20_float.pt --model resnet20 --init default --dataset cifar10 --epochs 2 --lr 0.02
run checkpoints/resnet20_w8a8.pt --model resnet20 --init checkpoints/resnet20_float.pt --dataset cifar10 --bits W8A8 --epochs 0.3 --lr 0.0005
run checkpoints/resnet20_w4a4.pt --model resnet20 --init checkpoints/resnet20_float.pt --dataset cifar10 --bits checkpoints/configs/w4a4.yaml --epochs 1 --lr 0.002 --threads 1
# the earlier W4A4 (symmetric weights, so signed activation codes: a ReLU zero is code -8), kept for the results measured on it
run checkpoints/resnet20_w4a4_symmetric.pt --model resnet20 --init checkpoints/resnet20_float.pt --dataset cifar10 --bits checkpoints/configs/w4a4_symmetric.yaml --epochs 1 --lr 0.002
run checkpoints/resnet8_w8a8.pt --model resnet8 --init default --dataset cifar10 --bits W8A8 --epochs 1 --lr 0.0002
run checkpoints/resnet20_mixed48.pt --model resnet20 --init checkpoints/resnet20_float.pt --dataset cifar10 --bits checkpoints/configs/mixed48.yaml --epochs 1 --lr 0.002
run checkpoints/resnet20_w3a3.pt --model resnet20 --init checkpoints/resnet20_float.pt --dataset cifar10 --bits checkpoints/configs/w3a3.yaml --epochs 1.5 --lr 0.002 --threads 1
run checkpoints/resnet20_w3a3_symmetric.pt --model resnet20 --init checkpoints/resnet20_float.pt --dataset cifar10 --bits checkpoints/configs/w3a3_symmetric.yaml --epochs 1.5 --lr 0.002
run checkpoints/resnet20_w2a2.pt --model resnet20 --init checkpoints/resnet20_float.pt --dataset cifar10 --bits checkpoints/configs/w2a2.yaml --epochs 2.5 --lr 0.002 --threads 1

# Table III's checkpoints under the held-out protocol: trained on 45,000 of the 50,000 training images; the other
# 5,000 (a fixed random choice recorded in each checkpoint, `fames train --holdout`) are the validation split of
# `fames run` in target mode. The QAT runs inherit the float model's split.
H=checkpoints/holdout5k
mkdir -p "$H"
hrun() { local out=$1; shift; [ -f "$out" ] && { echo "have $out"; return; }; echo "== $out"; fames train "$@" --out "$out" --manifest "$H/manifest.json"; }
# from scratch (random init): the zoo's pretrained weights were trained on all 50,000 images
hrun $H/resnet20_float.pt --model resnet20 --dataset cifar10 --epochs 24 --lr 0.1 --holdout 5000
hrun $H/resnet20_w8a8.pt --model resnet20 --init $H/resnet20_float.pt --dataset cifar10 --bits W8A8 --epochs 0.3 --lr 0.0005
hrun $H/resnet20_w4a4.pt --model resnet20 --init $H/resnet20_float.pt --dataset cifar10 --bits checkpoints/configs/w4a4.yaml --epochs 1 --lr 0.002 --threads 1
hrun $H/resnet20_mixed48.pt --model resnet20 --init $H/resnet20_float.pt --dataset cifar10 --bits checkpoints/configs/mixed48.yaml --epochs 1 --lr 0.002
hrun $H/resnet20_w3a3.pt --model resnet20 --init $H/resnet20_float.pt --dataset cifar10 --bits checkpoints/configs/w3a3.yaml --epochs 1.5 --lr 0.002 --threads 1
hrun $H/resnet20_w2a2.pt --model resnet20 --init $H/resnet20_float.pt --dataset cifar10 --bits checkpoints/configs/w2a2.yaml --epochs 2.5 --lr 0.002 --threads 1
