#!/usr/bin/env bash
# Prepare what scripts/gpu_study.py needs on a GPU machine without network, in .offline/ (ignored by git):
# a wheelhouse for the CUDA PyTorch image of scripts/cuda-image-packages.txt (Python 3.12, Linux x86_64,
# glibc >= 2.28: Ray and the rest, slimmed and LZMA-compressed) and a copy of the CIFAR-10 archive.
# Then check that the checkout plus .offline/ fit an upload limit (default 64 MiB).
#
#   bash scripts/prepare_gpu_study.sh PYTHON3.12 CIFAR10_ARCHIVE [LIMIT_MIB]
#
# PYTHON3.12: an interpreter of the image's Python version (pip evaluates requirement markers for the
# interpreter it runs on). CIFAR10_ARCHIVE: the image-folder archive of CIFAR-10 (cifar10-jpeg.tar.gz).
# Takes a few minutes (LZMA-compressing Ray's wheel is most of it).
set -euo pipefail
cd "$(dirname "$0")/.."
python312=${1:?usage: $0 PYTHON3.12 CIFAR10_ARCHIVE [LIMIT_MIB]}
archive=${2:?usage: $0 PYTHON3.12 CIFAR10_ARCHIVE [LIMIT_MIB]}
limit_mib=${3:-64}
rm -rf .offline/wheels
mkdir -p .offline
python3 scripts/wheelhouse.py .offline/wheels --python "$python312" --glibc 2.28 \
    --have scripts/cuda-image-packages.txt --slim --lzma
cp "$archive" .offline/cifar10-jpeg.tar.gz
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
offline=$(du -sb .offline | cut -f1)
total=$((tree + offline))
echo "checkout $((tree / 1024)) KiB + .offline $((offline / 1024)) KiB = $((total / 1048576)) MiB of ${limit_mib} MiB"
if [ "$total" -gt $((limit_mib * 1048576)) ]; then
    echo "over the limit: carry less" >&2
    exit 1
fi
