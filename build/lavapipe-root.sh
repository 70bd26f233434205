#!/usr/bin/env bash
# Runs a command against a lavapipe that has cooperative matrices (docs/DESIGN.md, "Shader toolchain"): Debian
# trixie's root with Mesa from trixie-backports (VK_KHR_cooperative_matrix, VK_NV_cooperative_matrix2) and
# trixie's validation layers, which know those extensions. Bookworm's own lavapipe has neither, and the newer
# driver cannot be loaded into a bookworm process (C runtime), so the command runs chrooted there, with this
# machine's .NET SDK, NuGet cache and checkout bind-mounted at the same paths in a private mount namespace.
# The root is made once (debootstrap, about 2 minutes) and reused by later runs on the same machine.
#   build/lavapipe-root.sh run COMMAND [ARGS...]     (as root; cwd inside = the checkout)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="${MAMBA2_LAVAPIPE_ROOT:-/var/cache/mamba2/trixie-lavapipe}"
release=trixie
packages_backports=(mesa-vulkan-drivers)
packages=(libvulkan1 vulkan-validationlayers libicu76 ca-certificates)
stamp="$root/.mamba2-root"
want="$release ${packages_backports[*]} ${packages[*]}"

die() { echo "lavapipe-root: $*" >&2; exit 1; }
[[ "${1:-}" == run && $# -ge 2 ]] || die "usage: build/lavapipe-root.sh run COMMAND [ARGS...]"
shift
[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot, mounts)"

make_root() {
  command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
  source "$repo/build/debian-release.sh"
  local mirror new="$root.new"
  mirror=$(release_mirror) || die "no Debian mirror in this machine's apt sources"
  echo "lavapipe-root: making a $release root at $root (once; about 2 minutes) ..." >&2
  rm -rf "$new"
  mkdir -p "$(dirname "$root")"
  debootstrap --variant=minbase "$release" "$new" "$mirror" >"$new.log" 2>&1 || { tail -n 20 "$new.log" >&2; die "debootstrap failed"; }
  echo "deb $mirror $release-backports main" >"$new/etc/apt/sources.list.d/backports.list"
  chroot "$new" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c "
    apt-get update -qq &&
    apt-get install -y -qq --no-install-recommends -t $release-backports ${packages_backports[*]} &&
    apt-get install -y -qq --no-install-recommends ${packages[*]} && apt-get clean" >>"$new.log" 2>&1 ||
    { tail -n 20 "$new.log" >&2; die "installing the driver in the root failed"; }
  echo "$want" >"$new/.mamba2-root"
  rm -rf "$root" "$new.log"
  mv "$new" "$root"
}

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  make_root
fi

dotnet_dir="$(dirname "$(readlink -f "$(command -v dotnet)")")"
nuget="${NUGET_PACKAGES:-$HOME/.nuget/packages}"
mkdir -p "$nuget"
# The mounts live in a private namespace: they vanish with the command, whatever happens to it.
exec unshare --mount --propagation private bash -s -- "$root" "$repo" "$dotnet_dir" "$nuget" "$@" <<'INNER'
set -euo pipefail
root="$1" repo="$2" dotnet_dir="$3" nuget="$4"
shift 4
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --bind /sys "$root/sys"
mount -t tmpfs tmpfs "$root/tmp"
# After /tmp: a checkout under /tmp must not be hidden by the root's fresh /tmp.
for d in "$repo" "$dotnet_dir" "$nuget"; do
  mkdir -p "$root$d"
  mount --bind "$d" "$root$d"
done
env=(HOME="$HOME" PATH="$dotnet_dir:/usr/local/bin:/usr/bin:/bin" DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
  DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1 NUGET_PACKAGES="$nuget" TERM="${TERM:-dumb}")
while IFS='=' read -r name value; do
  env+=("$name=$value")
done < <(env | grep -E '^(MAMBA2_[A-Z0-9_]*|CI|COLUMNS)=' || true)
exec chroot "$root" /usr/bin/env -i "${env[@]}" bash -c 'cd "$0" && exec "$@"' "$repo" "$@"
INNER
