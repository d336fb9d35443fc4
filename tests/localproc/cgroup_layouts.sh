#!/usr/bin/env bash
# Runs localproc's kill, timeout and limit tests under another cgroup layout,
# made in a private mount namespace: "v1" (the v1 hierarchies alone: no
# cgroup2 mount, so no cgroup.kill) or "v2" (one cgroup2 hierarchy at
# /sys/fs/cgroup, as on a pure v2 machine). Checks that localproc detects the
# layout and that the tests pass under it. Exit 77 (skipped) when this machine
# cannot show the layout (not root, no unshare, no v1 hierarchies to keep).
#
#   tests/localproc/cgroup_layouts.sh build/tests/crucible_localproc_test v1
set -uo pipefail
bin=$1
layout=$2
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null; then
  echo "skipped: needs root and unshare"
  exit 77
fi
filter='*Describe*:*Timeout*:*Cancel*:*SlotAfter*:*ExitZero*:*Memory*:*Cpu*'
case "$layout" in
  v1)
    setup='
      awk '\''$3=="cgroup"'\'' /proc/self/mounts | grep -q . || exit 77
      for m in $(awk '\''$3=="cgroup2"{print $2}'\'' /proc/self/mounts); do umount "$m" || exit 1; done' ;;
  v2)
    setup='
      for m in $(awk '\''$3=="cgroup" || $3=="cgroup2"{print $2}'\'' /proc/self/mounts | sort -r); do umount "$m" || exit 1; done
      if mountpoint -q /sys/fs/cgroup; then umount /sys/fs/cgroup || exit 1; fi
      mount -t cgroup2 none /sys/fs/cgroup || exit 77' ;;
  *)
    echo "usage: $0 TEST_BINARY v1|v2" >&2
    exit 2 ;;
esac
out=$(unshare -m --propagation private sh -c "$setup
  exec '$bin' --gtest_filter='$filter'" 2>&1)
rc=$?
[ $rc -eq 77 ] && { echo "skipped: this machine cannot show a $layout layout"; exit 77; }
echo "$out" | grep -E "describe:|Skipped|OK \]|FAILED" || true
[ $rc -eq 0 ] || { echo "$out" | tail -40; exit 1; }
if ! echo "$out" | grep -q "describe: cgroup $layout at "; then
  echo "expected localproc to detect the $layout layout"
  exit 1
fi
