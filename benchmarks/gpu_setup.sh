# Source this (". benchmarks/gpu_setup.sh") on the GPU machine, from the repo root, before any benchmark.
#
# Why: the GPU machine (docs/benchmarks-gpu.md) has torch, timm, accelerate, typer, numpy, ... but not
# pydantic, diffusers, sam2 (+ hydra/omegaconf/iopath/antlr4), decord, zarr, numcodecs, donfig,
# google-crc32c, webdataset (+ braceexpand) and cannot reach a registry. Those travel as wheels in the
# git-ignored .whl/ (carry: [".whl"]) and are installed into /tmp/site with --no-deps, so nothing the
# machine already has (torch, numpy, ...) is replaced: .whl holds none of them. typing_extensions is the
# one exception: pydantic-core needs >= 4.16, newer than the image may hold, and newer is compatible.
# PyAV (av, 36 MB) is NOT carried: it would break the 64 MiB tree limit, and the benchmarks write their
# synthetic clips with OpenCV there (the image has opencv-python-headless); decord still decodes.
#
# A4G_WHEELS / A4G_SITE override the folders (the CPU check of this set uses them).

A4G_WHEELS=${A4G_WHEELS:-.whl}
A4G_SITE=${A4G_SITE:-/tmp/site}
A4G_PY=${A4G_PY:-python3}
if ! ls "$A4G_WHEELS"/*.whl >/dev/null 2>&1; then
    echo "gpu_setup: no wheels in $A4G_WHEELS (was the call made with carry: [\".whl\"]?)" >&2
    return 1 2>/dev/null || exit 1
fi
"$A4G_PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$A4G_SITE" "$A4G_WHEELS"/*.whl || { return 1 2>/dev/null || exit 1; }
export PYTHONPATH="$A4G_SITE:$PWD"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
