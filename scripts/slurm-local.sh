#!/usr/bin/env bash
# slurm-local.sh -- a real one-node Slurm cluster on localhost, without systemd.
# For CI and for local testing of Slurm job arrays (Debian/Ubuntu, run as root).
#
#   scripts/slurm-local.sh install              # apt-get the packages (idempotent)
#   out=$(scripts/slurm-local.sh start) && eval "$out"   # prints: export SLURM_CONF=...
#   sbatch --array=0-5%3 --wrap 'echo $SLURM_ARRAY_TASK_ID'
#   scripts/slurm-local.sh status               # exits 1 if slurmctld is not running
#   scripts/slurm-local.sh stop                 # cancels jobs, stops daemons
#
# Every subcommand takes an optional STATE_DIR (default: ${TMPDIR:-/tmp}/safestep-slurm).
# Everything lives there: slurm.conf, the munge key and socket, the
# slurmctld state, the slurmd spool, logs and pid files. Nothing is written to /etc.
#
# After `start`, the caller must export SLURM_CONF=STATE_DIR/etc/slurm.conf (that
# is the only line `start` prints on stdout; `env` prints it again). The munge
# socket is named in that slurm.conf (AuthInfo), so no other variable is needed.
# (Plain `eval "$(... start)"` would hide a failed start from `set -e`.)
#
# Accounting is off (AccountingStorageType/JobCompType none): `sacct` does not
# work; finished jobs stay visible to `squeue -t all` / `scontrol show job` for
# MinJobAge (300 s).
#
# Each `start` is a clean start (slurmctld -c): jobs of an earlier run are forgotten.
# Optional environment: SLURM_LOCAL_CPUS (default: nproc), SLURM_LOCAL_MEM_MB
# (default: free -m total), SLURM_LOCAL_CTLD_PORT (6817), SLURM_LOCAL_SLURMD_PORT
# (6818), SLURM_LOCAL_CRED_EXPIRE (seconds; also the delay before a requeued job
# may start again, default 10), SLURM_LOCAL_TIMEOUT (wait per daemon, default 60).
# `start` on a running cluster does nothing; `stop` first to apply new settings.
set -euo pipefail

PROG=slurm-local
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}

log() { echo "$PROG: $*" >&2; }
die() { echo "$PROG: error: $*" >&2; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  echo "usage: $0 {install|start|stop|status|env} [STATE_DIR]" >&2
  exit 2
}

# ---- paths -----------------------------------------------------------------
set_paths() {
  S=${1:-${TMPDIR:-/tmp}/safestep-slurm}
  S=$(realpath -m -- "$S")
  CONF=$S/etc/slurm.conf
  MUNGE_SOCK=$S/munge/munge.socket.2
  # Unix socket paths (munge, slurmd spool sockets) must fit in 108 bytes.
  ((${#S} <= 60)) || die "STATE_DIR path too long (${#S} > 60 chars): $S"
  export SLURM_CONF=$CONF
}

# ---- pids ------------------------------------------------------------------
# alive PID: the process exists and is not a zombie (killed daemons may stay
# zombies for a while when pid 1 is slow to reap them, as in some containers).
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [[ ${st:0:1} != [ZX] ]]
}

# pid_of NAME: pid from STATE_DIR/run/NAME.pid if that process is alive and is NAME.
pid_of() {
  local f=$S/run/$1.pid pid
  [[ -s $f ]] || return 1
  pid=$(tr -dc 0-9 <"$f")
  [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] && alive "$pid" || return 1
  echo "$pid"
}

# kill_wait PID...: TERM, wait up to 15 s, then KILL.
kill_wait() {
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  local i p left
  for ((i = 0; i < 150; i++)); do
    left=()
    for p in "$@"; do alive "$p" && left+=("$p"); done
    ((${#left[@]})) || return 0
    sleep 0.1
  done
  log "still alive after TERM, sending KILL: ${left[*]}"
  kill -KILL "${left[@]}" 2>/dev/null || true
  sleep 0.5
}

stop_daemon() {
  local pid
  if pid=$(pid_of "$1"); then
    log "stopping $1 (pid $pid)"
    kill_wait "$pid"
  fi
  rm -f "$S/run/$1.pid"
}

# slurmstepd processes of this cluster: cwd or an open file (slurmd.log) in STATE_DIR.
our_stepds() {
  local p fd
  for p in $(pgrep -x slurmstepd || true); do
    for fd in "/proc/$p/cwd" "/proc/$p/fd/"*; do
      if [[ $(readlink "$fd" 2>/dev/null) == "$S"/* ]]; then
        echo "$p"
        break
      fi
    done
  done
}

# fail_with NAME LOGFILE...: print the tail of the logs and exit non-zero.
fail_with() {
  local name=$1 f
  shift
  echo "$PROG: error: $name failed to start" >&2
  for f in "$@"; do
    [[ -s $f ]] || continue
    echo "---- last lines of $f ----" >&2
    tail -n 25 "$f" >&2
  done
  cmd_stop quiet || true
  exit 1
}

# wait_for NAME CMD...: poll CMD (each try bounded to 5 s) until it succeeds;
# fail as soon as daemon NAME has died, or after $TIMEOUT seconds.
wait_for() {
  local name=$1 t0=$SECONDS
  shift
  while ((SECONDS - t0 < TIMEOUT)); do
    # the pid file appears right after the daemon forks; give it 3 s
    if ! pid_of "$name" >/dev/null && ((SECONDS - t0 >= 3)); then
      log "$name is not running"
      return 1
    fi
    timeout 5 "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "timeout after ${TIMEOUT}s waiting for $name"
  return 1
}

# port_busy PORT: something listens on TCP PORT (IPv4 or IPv6).
port_busy() {
  local hex
  hex=$(printf ':%04X' "$1")
  awk -v p="$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p {f = 1} END {exit !f}' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# ---- config ----------------------------------------------------------------
write_config() {
  local host cpus mem topo="" hw
  host=$(hostname -s)
  cpus=${SLURM_LOCAL_CPUS:-$(nproc)}
  mem=${SLURM_LOCAL_MEM_MB:-$(free -m | awk '/^Mem:/ {print $2}')}
  [[ $cpus =~ ^[1-9][0-9]*$ && $mem =~ ^[1-9][0-9]*$ ]] || die "bad CPU count '$cpus' or memory '$mem' MB"
  # Use slurmd's own view of the socket/core layout when it agrees with $cpus.
  hw=$(slurmd -C 2>/dev/null | head -n1) || true
  if [[ $hw =~ CPUs=([0-9]+).*SocketsPerBoard=([0-9]+).*CoresPerSocket=([0-9]+).*ThreadsPerCore=([0-9]+) ]] &&
    ((BASH_REMATCH[1] == cpus)); then
    topo=" Sockets=${BASH_REMATCH[2]} CoresPerSocket=${BASH_REMATCH[3]} ThreadsPerCore=${BASH_REMATCH[4]}"
  fi
  mkdir -p "$S/etc"
  cat >"$CONF.tmp" <<EOF
# Generated by scripts/slurm-local.sh -- one-node cluster, state in $S
ClusterName=safestep
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${SLURM_LOCAL_CTLD_PORT:-6817}
SlurmdPort=${SLURM_LOCAL_SLURMD_PORT:-6818}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK,cred_expire=${SLURM_LOCAL_CRED_EXPIRE:-10}
StateSaveLocation=$S/ctld
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MaxArraySize=10001
MaxJobCount=100000
JobRequeue=1
MinJobAge=300
KillWait=5
MailProg=/bin/true
InactiveLimit=0
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus$topo RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
  # No cgroup.conf: proctrack/pgid + task/none + jobacct_gather/none never load a
  # cgroup plugin (checked on a cgroup-v1 gVisor sandbox and works without one).
  rm -f "$S/etc/cgroup.conf"
}

# ---- subcommands -----------------------------------------------------------
cmd_install() {
  local pkgs=(slurmctld slurmd slurm-client munge)
  if dpkg -s "${pkgs[@]}" >/dev/null 2>&1; then
    log "already installed: ${pkgs[*]}"
    return 0
  fi
  [[ $(id -u) == 0 ]] || die "install must run as root"
  log "installing ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

cluster_up() {
  pid_of munged >/dev/null && pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null &&
    [[ $(sinfo -h -N -o %T 2>/dev/null | head -n1) =~ ^(idle|mixed|allocated|completing) ]]
}

cmd_start() {
  [[ $(id -u) == 0 ]] || die "start must run as root (SlurmUser=root)"
  local b
  for b in munged mungekey munge slurmctld slurmd sinfo; do
    command -v "$b" >/dev/null || [[ -x /usr/sbin/$b ]] || die "$b not found; run: $0 install"
  done
  export PATH=$PATH:/usr/sbin
  if cluster_up; then
    log "already running (state in $S)"
    cmd_env
    return 0
  fi
  # Partly running or stale pid files from an earlier run: clean up first.
  cmd_stop quiet
  local port
  for port in "${SLURM_LOCAL_CTLD_PORT:-6817}" "${SLURM_LOCAL_SLURMD_PORT:-6818}"; do
    ! port_busy "$port" || die "TCP port $port is already in use (another Slurm?); stop it or set SLURM_LOCAL_CTLD_PORT / SLURM_LOCAL_SLURMD_PORT"
  done
  local t0=$SECONDS
  mkdir -p "$S"/{etc,munge,ctld,spool,log,run}
  chmod 0755 "$S"
  chmod 0711 "$S/munge"
  write_config
  local f
  for f in "$S"/log/*.log; do [[ -e $f ]] && mv -f "$f" "$f.old"; done

  # munge: own key, socket, pid, log and seed files inside STATE_DIR
  if [[ ! -s $S/munge/munge.key ]]; then
    log "creating munge key"
    mungekey --create --keyfile="$S/munge/munge.key" 2>/dev/null ||
      dd if=/dev/urandom of="$S/munge/munge.key" bs=1024 count=1 status=none
  fi
  chown root:root "$S/munge/munge.key"
  chmod 0400 "$S/munge/munge.key"
  rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  munged --force --socket="$MUNGE_SOCK" --key-file="$S/munge/munge.key" \
    --pid-file="$S/run/munged.pid" --log-file="$S/log/munged.log" \
    --seed-file="$S/munge/munged.seed" >"$S/log/munged.stderr" 2>&1 ||
    fail_with munged "$S/log/munged.stderr" "$S/log/munged.log"
  wait_for munged sh -c "munge -n -S '$MUNGE_SOCK' | unmunge -S '$MUNGE_SOCK'" ||
    fail_with munged "$S/log/munged.stderr" "$S/log/munged.log"

  # slurmctld (daemonizes; -c: forget jobs/node state of earlier runs)
  slurmctld -c -f "$CONF" >"$S/log/slurmctld.stderr" 2>&1 ||
    fail_with slurmctld "$S/log/slurmctld.stderr" "$S/log/slurmctld.log"
  wait_for slurmctld sh -c "scontrol ping | grep -q UP" ||
    fail_with slurmctld "$S/log/slurmctld.stderr" "$S/log/slurmctld.log"

  # slurmd
  slurmd -c -f "$CONF" >"$S/log/slurmd.stderr" 2>&1 ||
    fail_with slurmd "$S/log/slurmd.stderr" "$S/log/slurmd.log"
  wait_for slurmd sh -c "sinfo -h -N -o %T | grep -qx idle" ||
    fail_with slurmd "$S/log/slurmd.stderr" "$S/log/slurmd.log" "$S/log/slurmctld.log"

  log "up in $((SECONDS - t0))s: $(sinfo -h -N -o '%N %T cpus=%c mem=%m')"
  cmd_env
}

cmd_stop() {
  # Cancel our jobs first: slurmstepd outlives slurmd by design.
  if pid_of slurmctld >/dev/null && [[ -s $CONF ]]; then
    if [[ -n $(squeue -h -o %i 2>/dev/null) ]]; then
      log "cancelling remaining jobs"
      scancel --full -u "$(id -un)" 2>/dev/null || true
      local i
      for ((i = 0; i < 50; i++)); do
        [[ -z $(squeue -h -t running,completing -o %i 2>/dev/null) ]] && break
        sleep 0.2
      done
    fi
  fi
  stop_daemon slurmd
  stop_daemon slurmctld
  # Normally none are left; if slurmctld was already dead, kill the job process
  # groups (proctrack/pgid: one per job) and then the slurmstepd themselves.
  local stepds pgids=() p g mine
  mapfile -t stepds < <(our_stepds)
  if ((${#stepds[@]})); then
    log "killing leftover slurmstepd and their jobs: ${stepds[*]}"
    mine=$(ps -o pgid= -p $$ | tr -d ' ')
    for p in "${stepds[@]}"; do
      for g in $(ps -o pgid= --ppid "$p" 2>/dev/null || true); do
        ((g > 1 && g != mine)) && pgids+=("$g")
      done
    done
    for g in "${pgids[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
    sleep 1
    for g in "${pgids[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
    kill -KILL "${stepds[@]}" 2>/dev/null || true
  fi
  stop_daemon munged
  rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  [[ ${1:-} == quiet ]] || log "stopped (state in $S)"
}

cmd_status() {
  local n
  for n in munged slurmctld slurmd; do
    if pid_of "$n" >/dev/null; then echo "$n: running (pid $(pid_of "$n"))"; else echo "$n: not running"; fi
  done
  pid_of slurmctld >/dev/null || return 1
  echo "SLURM_CONF=$CONF"
  sinfo -N -o '%N %P %T %c %m %E'
  squeue -o '%.12i %.10j %.9T %.10M %R'
}

cmd_env() {
  echo "export SLURM_CONF=$CONF"
}

main() {
  (($# >= 1 && $# <= 2)) || usage
  set_paths "${2:-}"
  case $1 in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  -h | --help | help) usage ;;
  *) usage ;;
  esac
}

main "$@"
