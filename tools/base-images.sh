#!/usr/bin/env bash
# Make buildml's own small base images from what this machine can reach (no registry needed),
# reusing them when present. Usage: tools/base-images.sh [busybox|python|all]
#   buildml-base/busybox:1        a static busybox (a few MB, seconds)       apt: busybox-static
#   buildml-base/python-ml:bookworm  Debian minbase + python3, numpy, scikit-learn, yaml  apt: debootstrap
set -euo pipefail

BUSYBOX_IMAGE=${BUSYBOX_IMAGE:-buildml-base/busybox:1}
PYTHON_IMAGE=${PYTHON_IMAGE:-buildml-base/python-ml:bookworm}
# The Debian mirror this machine's apt already uses (deb822 .sources or a classic sources.list).
apt_mirror() {
  local uri
  uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)
  echo "$uri"
}
MIRROR=${DEBIAN_MIRROR:-$(apt_mirror)}

present() { docker image inspect "$1" >/dev/null 2>&1; }

busybox_image() {
  present "$BUSYBOX_IMAGE" && { echo "$BUSYBOX_IMAGE present"; return; }
  local bin; bin=$(command -v busybox || true)
  [ -x /bin/busybox ] && bin=/bin/busybox
  [ -n "$bin" ] || { echo "busybox not found: apt-get install busybox-static" >&2; exit 1; }
  local dir; dir=$(mktemp -d)
  mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc" "$dir/root"
  chmod 1777 "$dir/tmp"
  cp "$bin" "$dir/bin/busybox"
  for applet in $("$bin" --list); do [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"; done
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$dir/etc/passwd"
  printf 'root:x:0:\n' > "$dir/etc/group"
  tar -C "$dir" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$BUSYBOX_IMAGE" >/dev/null
  rm -rf "$dir"
  echo "$BUSYBOX_IMAGE built"
}

python_image() {
  present "$PYTHON_IMAGE" && { echo "$PYTHON_IMAGE present"; return; }
  command -v debootstrap >/dev/null || { echo "debootstrap not found: apt-get install debootstrap" >&2; exit 1; }
  [ -n "$MIRROR" ] || { echo "no Debian mirror found in /etc/apt; set DEBIAN_MIRROR" >&2; exit 1; }
  local dir; dir=$(mktemp -d)
  debootstrap --variant=minbase --include=python3,python3-numpy,python3-sklearn,python3-yaml \
    bookworm "$dir" "$MIRROR" >"$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; exit 1; }
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc "$dir"/usr/share/man
  tar -C "$dir" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["/bin/bash"]' - "$PYTHON_IMAGE" >/dev/null
  rm -rf "$dir" "$dir.log"
  echo "$PYTHON_IMAGE built"
}

case "${1:-all}" in
  busybox) busybox_image ;;
  python) python_image ;;
  all) busybox_image; python_image ;;
  *) echo "usage: $0 [busybox|python|all]" >&2; exit 2 ;;
esac
