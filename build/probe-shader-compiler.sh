#!/usr/bin/env bash
# Prints which tensor-core features a shader compiler supports, as MSBuild reads them:
#   build/probe-shader-compiler.sh GLSLC SPIRV_VAL PROBE_DIR   ->   "khr_coopmat;nv_coopmat2;bf16" (possibly empty)
# A feature counts when its probe shader (PROBE_DIR/<feature>.comp) compiles and passes spirv-val.
set -uo pipefail
glslc="$1" spirv_val="$2" dir="$3"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
features=()
for probe in "$dir"/*.comp; do
  name=$(basename "$probe" .comp)
  if "$glslc" -O --target-env=vulkan1.3 -Werror -o "$tmp/$name.spv" "$probe" >/dev/null 2>&1 &&
     "$spirv_val" --target-env vulkan1.3 "$tmp/$name.spv" >/dev/null 2>&1; then
    features+=("$name")
  fi
done
(IFS=';'; echo "${features[*]}")
