#!/usr/bin/env bash
# Makes a shader compiler with the tensor-core features available to the build (docs/DESIGN.md, "Shader
# toolchain"). When the system's glslc passes every probe in shaders/probes, nothing is done. Otherwise, on Debian
# or Ubuntu, the newer Debian release's glslc and spirv-val are downloaded (apt-get download, from the mirror this
# machine's apt sources name) into .tools/shaderc, with the C runtime they were built for, and run through that
# runtime's own loader, so they work on an older system. Done once; later calls reuse it. Any failure (no
# network, not Debian) leaves the build with the system compiler and fewer kernel variants: exit code 0 always.
#   build/fetch-shader-compiler.sh [--quiet]
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/shaderc"
release="${MAMBA2_SHADERC_RELEASE:-forky}"
quiet=0
[[ "${1:-}" == "--quiet" ]] && quiet=1
say() { ((quiet)) || echo "shader compiler: $*" >&2; }
probe() { "$root/build/probe-shader-compiler.sh" "$1" "$2" "$root/shaders/probes"; }
wanted=$(ls "$root/shaders/probes"/*.comp | wc -l)
count() { [[ -z "$1" ]] && echo 0 || tr ';' '\n' <<<"$1" | wc -l; }

if [[ -x "$dest/bin/glslc" ]]; then
  have=$(probe "$dest/bin/glslc" "$dest/bin/spirv-val")
  if [[ $(count "$have") -ge $wanted ]]; then
    exit 0
  fi
fi
if command -v glslc >/dev/null && command -v spirv-val >/dev/null; then
  have=$(probe glslc spirv-val)
  if [[ $(count "$have") -ge $wanted ]]; then
    exit 0
  fi
  say "the system glslc supports [${have//;/ }] of [$(ls "$root/shaders/probes" | sed 's/\.comp$//' | tr '\n' ' ' | sed 's/ $//')]"
fi
if ! command -v apt-get >/dev/null || ! grep -qiE '^(ID|ID_LIKE)=.*(debian|ubuntu)' /etc/os-release 2>/dev/null; then
  say "not a Debian or Ubuntu system: building without the tensor-core kernels the compiler lacks"
  exit 0
fi

say "fetching glslc and spirv-val from Debian $release into .tools/shaderc (once) ..."
source "$root/build/debian-release.sh"
state="$dest/apt"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! release_apt "$release" "$state" ||
   ! apt-get "${APT_RELEASE[@]}" -qq --error-on=any update >"$work/log" 2>&1 ||
   ! (cd "$work" && apt-get "${APT_RELEASE[@]}" -qq download glslc libshaderc1 spirv-tools libc6 libstdc++6 libgcc-s1 >>"$work/log" 2>&1); then
  say "download failed (no network?); building with the system compiler: $(tail -n 1 "$work/log" 2>/dev/null)"
  exit 0
fi
rm -rf "$dest/root.new" && mkdir -p "$dest/root.new"
for deb in "$work"/*.deb; do
  dpkg-deb -x "$deb" "$dest/root.new" || { say "could not unpack $(basename "$deb")"; exit 0; }
done
loader=$(ls "$dest/root.new"/usr/lib/*-linux-gnu/ld-linux*.so.* 2>/dev/null | head -n 1)
[[ -n "$loader" ]] || { say "no loader in the downloaded C runtime"; exit 0; }
libdir=$(basename "$(dirname "$loader")")
rm -rf "$dest/root" && mv "$dest/root.new" "$dest/root"
mkdir -p "$dest/bin"
for tool in glslc spirv-val; do
  # The release's own loader and libraries: its binaries need a newer C runtime than the system may have.
  cat >"$dest/bin/$tool" <<WRAP
#!/bin/sh
r="\$(dirname "\$0")/../root"
exec "\$r/usr/lib/$libdir/$(basename "$loader")" --library-path "\$r/usr/lib/$libdir" "\$r/usr/bin/$tool" "\$@"
WRAP
  chmod +x "$dest/bin/$tool"
done
have=$(probe "$dest/bin/glslc" "$dest/bin/spirv-val")
say "$("$dest/bin/glslc" --version 2>/dev/null | head -n 1) from Debian $release supports [${have//;/ }]"
exit 0
