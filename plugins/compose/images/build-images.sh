#!/usr/bin/env bash
# Builds the executor images of the compose backend from Debian packages (no
# registry needed) and imports them into the local Docker engine:
#
#   crucible/busybox:latest  /bin/busybox (busybox-static) and its applets; for no-op and shell steps
#   crucible/python:3.11     a Debian 12 root with python3-minimal and its standard library (mmdebstrap --variant=essential)
#
#   build-images.sh [busybox|python]...   (default: both)
#
# Idempotent: an image that exists is left alone (remove it to rebuild).
set -euo pipefail

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_busybox() {
  local tag=crucible/busybox:latest
  if have_image "$tag"; then return 0; fi
  local bb=/bin/busybox
  [ -x "$bb" ] || { echo "build-images: $bb missing (apt-get install busybox-static)" >&2; exit 1; }
  local root
  root=$(mktemp -d)
  trap 'rm -rf "$root"' RETURN
  mkdir -p "$root/bin" "$root/usr/bin" "$root/etc" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp "$bb" "$root/bin/busybox"
  for applet in $("$bb" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  ln -sf ../../bin/env "$root/usr/bin/env"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' -c 'LABEL org.crucible-engine.image=busybox' - "$tag" >/dev/null
  echo "build-images: built $tag" >&2
}

build_python() {
  local tag=crucible/python:3.11
  if have_image "$tag"; then return 0; fi
  command -v mmdebstrap >/dev/null || { echo "build-images: mmdebstrap missing (apt-get install mmdebstrap)" >&2; exit 1; }
  mmdebstrap --quiet --variant=essential --include=python3-minimal,libpython3.11-stdlib bookworm - | docker import \
    -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' -c 'LABEL org.crucible-engine.image=python' - "$tag" >/dev/null
  echo "build-images: built $tag" >&2
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(busybox python)
for t in "${targets[@]}"; do
  case "$t" in
    busybox) build_busybox ;;
    python) build_python ;;
    *) echo "build-images: unknown image $t (busybox, python)" >&2; exit 2 ;;
  esac
done
