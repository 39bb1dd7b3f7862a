#!/usr/bin/env bash
# (Re)build the git-ignored .whl/ folder that benchmarks/gpu_setup.sh installs on the GPU machine.
#
# The set is a4g's dependencies that the machine's image lacks (docs/benchmarks-gpu.md lists why each
# is there), pinned to the versions this repo's CPU venv tests with, as CPython 3.12 manylinux x86-64
# wheels, with --no-deps so nothing the image has (torch, numpy, ...) is fetched. antlr4 4.9.3,
# iopath 0.1.10 and sam2 1.1.0 exist only as sdists: they are built here as pure-Python wheels
# (sam2 without its optional CUDA extension). PyAV is left out on purpose (36 MB; see gpu_setup.sh).
#
#   bash benchmarks/gpu_wheels.sh          # into .whl/ (A4G_WHEELS overrides)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${A4G_WHEELS:-.whl}
PY=${A4G_PY:-.venv/bin/python}
mkdir -p "$DEST"

PLATFORMS=(
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64
)
WHEELS=(
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    typing_extensions==4.16.0 diffusers==0.42.1 hydra-core==1.3.8 omegaconf==2.3.1 decord==0.6.0
    zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 webdataset==1.0.2
    braceexpand==0.1.7
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" "${WHEELS[@]}"
"$PY" -m pip wheel -q --no-deps -w "$DEST" antlr4-python3-runtime==4.9.3 iopath==0.1.10
SAM2_BUILD_CUDA=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" sam2==1.1.0

# Two versions of one package stop the whole install there: refuse them here.
dupes=$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$dupes" ]; then
    echo "error: more than one wheel of: $dupes (delete the older from $DEST)" >&2
    exit 2
fi
if unzip -l "$DEST"/sam2-*.whl | grep -q '\.so$'; then
    echo "error: the sam2 wheel holds a compiled extension; rebuild with SAM2_BUILD_CUDA=0" >&2
    exit 2
fi
ls "$DEST"
du -sh "$DEST"
