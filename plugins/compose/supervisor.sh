# The compose backend's in-executor supervisor: one attempt in one exec.
# POSIX sh (busybox ash and dash). Run as: sh -c SCRIPT crucible-supervisor WORK_ROOT NAME
#   stdin   a tar holding NAME/ (the inputs, the upstream file) and NAME.launch
#           (_t timeout, _g grace, _c output cap, `set -- ARGV`, and the
#           function _launch exporting the step's environment)
#   stdout  the step's stdout and stderr, and this script's own complaints
#   stderr  the control channel: "crucible-pid SUPERVISOR STEP", then
#           "crucible-exit RC WHY OOM_BEFORE OOM_AFTER", then optionally
#           "crucible-output N" followed by N bytes of CRUCIBLE_OUTPUT, then
#           "crucible-scrub ok|dirty"
# USR1 asks it to cancel the step. Everything of the step's user in the
# executor is killed when the step ends, and the work root and /tmp emptied.
_r=$1; _d=$1/$2; _l=$1/$2.launch
exec 3>&2 2>&1
_oom() {
  for _f in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do
    if [ -r "$_f" ]; then
      while read -r _a _b; do [ "$_a" = oom_kill ] && { echo "$_b"; return; }; done <"$_f"
    fi
  done
  echo 0
}
_left() {
  for _q in /proc/[0-9]*; do
    _q=${_q#/proc/}
    [ "$_q" != 1 ] && [ "$_q" != $$ ] && [ -O /proc/$_q ] && return 0
  done
  return 1
}
_scrub() {
  kill -KILL -1 2>/dev/null
  wait
  _n=0
  while _left && [ $_n -lt 100 ]; do kill -KILL -1 2>/dev/null; sleep 0.01; _n=$((_n + 1)); done
  _s=ok
  for _x in "$_r" /tmp /dev/shm; do
    rm -rf "$_x"/* "$_x"/.[!.]* "$_x"/..?* 2>/dev/null
    [ -z "$(ls -A "$_x" 2>/dev/null)" ] || _s=dirty
  done
  _left && _s=dirty
  echo "crucible-scrub $_s" >&3
}
if ! { mkdir "$_d" && tar -x -C "$_r" -f - && . "$_l"; }; then
  echo "crucible-setup-failed" >&3
  _scrub
  exit 0
fi
_o0=$(_oom)
_cs=$(command -v setsid)
_w=none; _i=
_k() {
  kill -TERM -$_p 2>/dev/null || kill -TERM $_p 2>/dev/null
  (sleep "$_g"; kill -KILL -$_p 2>/dev/null) >/dev/null 2>&1 3>&- &
}
trap '_w=cancelled; _i=1; _k' USR1
trap '[ $_w = none ] && { _w=timeout; _k; }; _i=1' USR2
cd "$_d" || exit 0
(_launch; exec "$_cs" "$@") </dev/null 3>&- &
_p=$!
exec 2>/dev/null
echo "crucible-pid $$ $_p" >&3
_wd=
if [ "$_t" != 0 ]; then (sleep "$_t"; kill -USR2 $$) >/dev/null 2>&1 3>&- & _wd=$!; fi
while :; do
  wait $_p
  _rc=$?
  if [ -n "$_i" ]; then _i=; continue; fi
  break
done
kill -KILL -1 2>/dev/null
wait
echo "crucible-exit $_rc $_w $_o0 $(_oom)" >&3
if [ -f "$_d/.crucible-output" ]; then
  _n=$(($(wc -c <"$_d/.crucible-output")))
  [ $_n -gt $_c ] && _n=$_c
  echo "crucible-output $_n" >&3
  head -c $_n "$_d/.crucible-output" >&3
fi
cd /
_scrub
