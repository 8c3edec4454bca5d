#!/usr/bin/env bash
# Quick start, first command: installs what is missing, builds kiln, and runs
# its main job. Until kiln ships a model, the main job shows what the CLI
# reads: the figures of the example weight file in tests/data.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh build
./build/kiln --version
./build/kiln info tests/data/example.safetensors
