#!/usr/bin/env bash
# Quick start, first command: installs what is missing, builds kiln, and runs
# its main job: images from the model kiln ships, into outputs/. (A tree
# without the shipped model shows what the CLI reads of the example weight
# file in tests/data instead.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh build
./build/kiln --version
if [ -f assets/models/shapes/model.safetensors ]; then
  ./build/kiln generate -p "a large red circle on a blue background, center" --num-images 4 --seed 1 -o outputs
else
  ./build/kiln info tests/data/example.safetensors
fi
