# The compose backend's in-executor supervisor: one attempt in one exec.
# POSIX sh (busybox ash and dash). Run as:
#   sh -c SCRIPT crucible-supervisor WORK_ROOT NAME [LAUNCH]
# NAME is the working directory under WORK_ROOT; it is emptied after each
# attempt and kept, so that a step creates no directory it need not. LAUNCH
# is the launch script: _t timeout and _g grace (seconds), _c output cap,
# `set -- ARGV`, and the function _launch exporting the step's environment.
# Without it, stdin is a tar holding NAME/ (inputs, upstream file) and
# .crucible-launch, the launch script.
#   stdout  the step's stdout and stderr, and this script's own complaints
#   stderr  the control channel: "crucible-pid SUPERVISOR STEP", then
#           "crucible-exit RC WHY OOM_BEFORE OOM_AFTER", then optionally
#           "crucible-output N" followed by N bytes of CRUCIBLE_OUTPUT, then
#           "crucible-scrub ok|dirty"
# USR1 asks it to cancel the step. Everything of the step's user in the
# executor is killed when the step ends, and the work root, /tmp and /dev/shm
# emptied. Few processes: each one costs the executor's cgroup and dockerd time.
_r=$1; _d=$1/$2
exec 3>&2 2>&1
_oom() {
  _v=0
  for _f in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do
    if [ -r "$_f" ]; then
      while read -r _a _b; do [ "$_a" = oom_kill ] && { _v=$_b; return; }; done <"$_f"
    fi
  done
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
  set --
  for _x in "$_r"/* "$_r"/.[!.]* "$_r"/..?* "$_d"/* "$_d"/.[!.]* "$_d"/..?* /tmp/* /tmp/.[!.]* /tmp/..?* \
    /dev/shm/* /dev/shm/.[!.]* /dev/shm/..?*; do
    [ "$_x" != "$_d" ] && { [ -e "$_x" ] || [ -L "$_x" ]; } && set -- "$@" "$_x"
  done
  _e=$#
  if [ "$_e" != 0 ]; then
    rm -rf "$@" 2>/dev/null
    for _x; do [ -e "$_x" ] || [ -L "$_x" ] && _s=dirty; done
  fi
  [ -d "$_d" ] && [ ! -L "$_d" ] && [ -O "$_d" ] || _s=dirty
  _left && _s=dirty
  echo "crucible-scrub $_s" >&3
}
{ [ -d "$_d" ] || mkdir "$_d"; } &&
if [ $# -ge 3 ]; then
  eval "$3"
else
  tar -x -C "$_r" -f - && . "$_r/.crucible-launch"
fi
if [ $? != 0 ] || ! cd "$_d"; then
  echo "crucible-setup-failed" >&3
  cd /
  _scrub
  exit 0
fi
_oom
_o0=$_v
_w=none; _i=
# Stops the step: SIGTERM to every process of the step's user but this one
# (its whole tree, setsid ones included), SIGKILL after the grace (ALRM).
_k() {
  kill -TERM -1 2>/dev/null
  (sleep "$_g"; kill -ALRM $$) >/dev/null 2>&1 3>&- &
}
trap '_w=cancelled; _i=1; _k' USR1
trap '[ $_w = none ] && { _w=timeout; _k; }; _i=1' USR2
trap 'kill -KILL -1 2>/dev/null; _i=1' ALRM
(_launch; exec "$@") </dev/null 3>&- &
_p=$!
exec 2>/dev/null
echo "crucible-pid $$ $_p" >&3
if [ "$_t" != 0 ]; then (sleep "$_t"; kill -USR2 $$) >/dev/null 2>&1 3>&- & fi
while :; do
  wait $_p
  _rc=$?
  if [ -n "$_i" ]; then _i=; continue; fi
  break
done
kill -KILL -1 2>/dev/null
wait
_oom
echo "crucible-exit $_rc $_w $_o0 $_v" >&3
if [ -f "$_d/.crucible-output" ]; then
  _n=$(($(wc -c <"$_d/.crucible-output")))
  [ $_n -gt $_c ] && _n=$_c
  echo "crucible-output $_n" >&3
  head -c $_n "$_d/.crucible-output" >&3
fi
cd /
_scrub
