#!/usr/bin/env bash
# Shared by the toolchain scripts: an apt configuration that reads one other Debian release's package lists
# (same mirror as this machine's own sources, never a host name written here) without touching the system's.
#   source build/debian-release.sh; release_apt RELEASE STATE_DIR   ->   sets the array APT_RELEASE (apt-get options)
release_mirror() {
  # The first "URIs:" (deb822) or "deb URI" (one-line) of the machine's Debian sources that serves the main archive.
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -e security -e nodesource -e google | head -n1 || true)
  if [[ -z "$uri" ]]; then
    uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -iv -e security | grep -i debian | head -n1 || true)
  fi
  [[ -n "$uri" ]] || return 1
  echo "$uri"
}

release_apt() {
  local release="$1" state="$2" mirror keyring
  mirror=$(release_mirror) || { echo "no Debian mirror in /etc/apt/sources*" >&2; return 1; }
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  mkdir -p "$state/lists/partial" "$state/archives/partial"
  printf 'deb [signed-by=%s] %s %s main\n' "$keyring" "$mirror" "$release" >"$state/sources.list"
  APT_RELEASE=(-o "Dir::Etc::SourceList=$state/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$state/lists" -o "Dir::Cache::Archives=$state/archives"
    -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1)
}
