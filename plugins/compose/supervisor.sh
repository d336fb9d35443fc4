# The compose backend's in-executor supervisor: one attempt in one exec.
# POSIX sh (busybox ash, dash; bash). Run as:
#   sh -c SCRIPT LABEL WORK_ROOT NAME [LAUNCH]
# LABEL names the attempt (crucible:RUN/STEP#N). NAME is the working directory
# under WORK_ROOT; it is emptied after each attempt and kept, so that a step
# creates no directory it need not. LAUNCH is the launch script: _t timeout and
# _g grace (seconds), _c output cap, `set -- ARGV`, and the function _launch
# exporting the step's environment. Without it, stdin is a tar holding NAME/
# (inputs, upstream file) and .crucible-launch, the launch script.
#   stdout  the step's stdout and stderr, and this script's own complaints
#   stderr  the control channel: "crucible-pid SUPERVISOR STEP", then
#           "crucible-exit CODE SIGNAL WHY OOM_BEFORE OOM_AFTER" (CODE -1 when
#           killed by SIGNAL), "crucible-scrub ok|dirty", and, when the step
#           wrote CRUCIBLE_OUTPUT, "crucible-output" followed by its bytes (at
#           most _c) to the end of the stream
# The report: WORK_ROOT/.crucible-report holds "crucible-of LABEL" and the same
# lines, and the scrub leaves the output file (NAME/.crucible-output), so that
# an engine that restarted can read how an attempt it no longer streams went.
# Both are gone before the next attempt's step starts. After its first line
# the report is only appended to, so a reader never finds it without its label.
# USR1 asks it to cancel the step. Everything of the step's user in the
# executor is killed when the step ends, and the work root, /tmp and /dev/shm
# emptied. Few processes: each one costs the executor's cgroup and dockerd time.
_r=$1; _d=$1/$2; _rp=$1/.crucible-report; _op=$1/$2/.crucible-output; _jp=$1/.crucible-jobs
exec 3>&2 2>&1
_oom() {
  _v=0
  for _f in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do
    if [ -r "$_f" ]; then
      while read -r _a _b; do [ "$_a" = oom_kill ] && { _v=$_b; return; }; done <"$_f"
    fi
  done
}
# Whether a process of the step's user other than this one is left. A zombie
# is not (it holds nothing; the executor's init reaps it): a timer killed a
# moment ago is one until then. The state comes from the State: line of
# /proc/PID/status, where a name cannot pass for it; a process gone meanwhile
# has none.
_left() {
  for _q in /proc/[0-9]*; do
    _q=${_q#/proc/}
    if [ "$_q" != 1 ] && [ "$_q" != $$ ] && [ -O /proc/$_q ]; then
      _lv=
      { while read -r _lk _lv _lr; do [ "$_lk" = State: ] && break; _lv=; done; } 2>/dev/null </proc/$_q/status
      case $_lv in Z | X | "") ;; *) return 0 ;; esac
    fi
  done
  return 1
}
_scrub() {
  kill -KILL -1 2>/dev/null
  wait
  _n=0
  while _left && [ $_n -lt 120 ]; do kill -KILL -1 2>/dev/null; [ $_n -lt 20 ] || sleep 0.01; _n=$((_n + 1)); done
  _s=ok
  set --
  for _x in "$_r"/* "$_r"/.[!.]* "$_r"/..?* "$_d"/* "$_d"/.[!.]* "$_d"/..?* /tmp/* /tmp/.[!.]* /tmp/..?* \
    /dev/shm/* /dev/shm/.[!.]* /dev/shm/..?*; do
    case $_x in
      "$_d") continue ;;
      "$_rp" | "$_op") [ -f "$_x" ] && [ ! -L "$_x" ] && continue ;;
    esac
    { [ -e "$_x" ] || [ -L "$_x" ]; } && set -- "$@" "$_x"
  done
  if [ $# != 0 ]; then
    rm -rf "$@" 2>/dev/null
    for _x; do [ -e "$_x" ] || [ -L "$_x" ] && _s=dirty; done
  fi
  [ -d "$_d" ] && [ ! -L "$_d" ] && [ -O "$_d" ] || _s=dirty
  _left && _s=dirty
  echo "crucible-scrub $_s" >&3
  echo "crucible-scrub $_s" >>"$_rp"
}
# What an earlier attempt reported is gone before this one's step starts.
{ printf "crucible-of %s\n" "$0" >"$_rp" && { [ -d "$_d" ] || mkdir "$_d"; } && { [ ! -e "$_op" ] || rm -f "$_op"; }; } &&
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
# Timers run outside this shell's jobs, so that `wait` waits for the step alone.
_after() { ( (sleep "$1"; kill -"$2" $$) >/dev/null 2>&1 3>&- & ) }
# Stops the step: SIGTERM to every process of the step's user but this one
# (its whole tree, setsid ones included), SIGKILL after the grace (ALRM).
_k() {
  kill -TERM -1 2>/dev/null
  _after "$_g" ALRM
}
trap '_w=cancelled; _i=1; _k' USR1
trap '[ $_w = none ] && { _w=timeout; _k; }; _i=1' USR2
trap 'kill -KILL -1 2>/dev/null; _i=1' ALRM
(_launch; exec "$@") </dev/null 3>&- &
_p=$!
exec 2>/dev/null
echo "crucible-pid $$ $_p" >&3
echo "crucible-pid $$ $_p" >>"$_rp"
[ "$_t" != 0 ] && _after "$_t" USR2
# `jobs` after `wait` tells an exit code above 128 from a signal, which
# `wait PID` cannot; bash reports the step itself and forgets it, so there
# `wait PID` it is, and codes above 128 read as signals.
_rc=
while :; do
  if [ -n "$BASH_VERSION" ]; then wait $_p; _rc=$?; else wait; fi
  if [ -n "$_i" ]; then _i=; continue; fi
  kill -0 $_p 2>/dev/null || break
done
_sg=0
if [ -n "$_rc" ]; then
  [ $_rc -gt 128 ] && { _sg=$((_rc - 128)); _rc=-1; }
  _j=
else
  jobs >"$_jp"
  _j=; read -r _j <"$_jp"
  _rc=-1
fi
case $_j in
  "") ;;
  *"Done("*) _rc=${_j##*Done(}; _rc=${_rc%%)*} ;;
  *Done*) _rc=0 ;;
  *)
    case $_j in
      *Hangup*) _sg=1 ;; *Interrupt*) _sg=2 ;; *Quit*) _sg=3 ;; *Illegal*) _sg=4 ;; *Trace*) _sg=5 ;;
      *Abort*) _sg=6 ;; *"Bus error"*) _sg=7 ;; *Floating*) _sg=8 ;; *Killed*) _sg=9 ;;
      *"Real-time signal "*) _sg=${_j##*Real-time signal }; _sg=$((34 + ${_sg%%[!0-9]*})) ;;
      *"signal 1"*) _sg=10 ;; *Segmentation*) _sg=11 ;; *"signal 2"*) _sg=12 ;; *"Broken pipe"*) _sg=13 ;;
      *Alarm*) _sg=14 ;; *Terminated*) _sg=15 ;; *"Stack fault"*) _sg=16 ;; *"CPU time"*) _sg=24 ;;
      *"File size"*) _sg=25 ;; *"Virtual timer"*) _sg=26 ;; *Profiling*) _sg=27 ;; *"I/O possible"*) _sg=29 ;;
      *"Power failure"*) _sg=30 ;; *"Bad system call"*) _sg=31 ;;
    esac ;;
esac
kill -KILL -1 2>/dev/null
wait
_oom
_e="crucible-exit $_rc $_sg $_w $_o0 $_v"
echo "$_e" >&3
echo "$_e" >>"$_rp"
cd /
_scrub
if [ -s "$_op" ]; then
  echo "crucible-output" >&3
  head -c "$_c" "$_op" >&3
fi
