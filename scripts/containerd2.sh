#!/usr/bin/env bash
# Unpacks containerd 2.x from Debian sid into a directory of the tests,
# without touching the machine's apt sources: a sid source list in a
# private apt directory, `apt-get download`, `dpkg-deb -x`. containerd 2.x
# needs only libc6 >= 2.34, so it runs on bookworm. Prints the bin dir.
# Idempotent: an unpacked copy is reused.
set -euo pipefail
want="${CNFBOX_CONTAINERD2_VERSION:-2.1.9+ds1-5}"
cache="${CNFBOX_CACHE:-/var/cache/cnfbox}"
out="$cache/containerd-2"
if [[ -x "$out/usr/bin/containerd" ]]; then
  echo "$out/usr/bin"
  exit 0
fi
apt_dir="$cache/sid-apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/etc" "$apt_dir/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" \
  > "$apt_dir/etc/sources.list"
opts=(-o "Dir::Etc::sourcelist=$apt_dir/etc/sources.list" -o "Dir::Etc::sourceparts=/nonexistent"
      -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o "APT::Sandbox::User=root")
echo "containerd2: apt-get update (sid, private lists in $apt_dir)" >&2
apt-get "${opts[@]}" update -qq >&2
cd "$apt_dir/debs"
rm -f containerd_*.deb
# The pinned version, else sid's candidate if it is still a 2.x.
if ! apt-get "${opts[@]}" download "containerd=$want" >&2 2>/dev/null; then
  candidate=$(apt-cache "${opts[@]}" policy containerd | awk '/Candidate:/ {print $2}')
  case "$candidate" in
    2.*) echo "containerd2: $want is gone from sid, taking $candidate" >&2
         apt-get "${opts[@]}" download "containerd=$candidate" >&2 ;;
    *) echo "containerd2: sid has no containerd 2.x (candidate: ${candidate:-none})" >&2; exit 1 ;;
  esac
fi
rm -rf "$out.tmp"
dpkg-deb -x containerd_*.deb "$out.tmp"
"$out.tmp/usr/bin/containerd" --version >&2
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out/usr/bin"
