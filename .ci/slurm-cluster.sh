#!/usr/bin/env bash
# .ci/slurm-cluster.sh -- throwaway single-node SLURM cluster for testing the
# DiffSmooth workflow with `snakemake --profile slurm` (CI and local checks).
#
#   bash .ci/slurm-cluster.sh up       # install packages if missing, start everything
#   bash .ci/slurm-cluster.sh status   # exit 0 if every daemon is up and the node is usable
#   bash .ci/slurm-cluster.sh down     # stop every daemon by PID file (bounded waits)
#
# Debian 12 packages (Slurm 22.05, munge, MariaDB), run as root, no systemd needed.
# What it starts (all state, configs, logs and PID files live under $STATE_DIR):
#   munged    private socket $STATE_DIR/munge/munge.socket (slurm.conf AuthInfo=socket=...)
#   mariadbd  127.0.0.1:$DB_PORT, datadir $STATE_DIR/mysql
#   slurmdbd  accounting, so `sacct` works: the snakemake SLURM plugin polls job
#             status with sacct by default and would wait forever without it
#   slurmctld cluster "diffsmooth", partitions `cpu` (default) and `gpu`
#   slurmd    one node = this machine, with one FAKE GPU (gres.conf File=/dev/null)
#             so rules requesting `gpu: 1` schedule on CPU-only machines
# and registers account `diffsmooth` + user root with sacctmgr. These names match
# the defaults in slurm/config.yaml, so the profile needs no override here.
#
# /etc/slurm/slurm.conf is made a symlink to $STATE_DIR/etc/slurm.conf so the
# plain client commands (sbatch, sacct, ...) and snakemake find the cluster.
# An /etc/slurm/slurm.conf that this script did not create is never touched
# (`up` refuses; export SLURM_CONF=$STATE_DIR/etc/slurm.conf by hand instead).
# `down` removes the symlink again: with slurm-client installed but no
# reachable slurmctld, every snakemake call would otherwise wait ~9 s.
#
# Every wait is bounded ($WAIT_S seconds). When a daemon does not come up the
# script exits non-zero, names the daemon and prints the tail of its log.
#
# Environment (all optional):
#   DIFFSMOOTH_SLURM_DIR      state directory        (default $TMPDIR or /tmp, then diffsmooth-slurm)
#   DIFFSMOOTH_SLURM_WAIT     seconds per wait       (default 60)
#   DIFFSMOOTH_SLURM_DB_PORT  MariaDB TCP port       (default 13306)
#   DIFFSMOOTH_SLURM_CPUS     CPUs advertised        (default: nproc)
#   DIFFSMOOTH_SLURM_MEM_MB   RealMemory advertised  (default: 90% of MemTotal)
#   DIFFSMOOTH_SLURM_GPUS     fake GPUs advertised   (default 1)
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"   # daemons live in sbin; some root shells lack it

STATE_DIR=${DIFFSMOOTH_SLURM_DIR:-${TMPDIR:-/tmp}/diffsmooth-slurm}
WAIT_S=${DIFFSMOOTH_SLURM_WAIT:-60}
DB_PORT=${DIFFSMOOTH_SLURM_DB_PORT:-13306}
GPUS=${DIFFSMOOTH_SLURM_GPUS:-1}
CLUSTER=diffsmooth
ACCOUNT=diffsmooth
NODE=$(hostname -s)
ETC_LINK=/etc/slurm/slurm.conf

ETC=$STATE_DIR/etc
RUN=$STATE_DIR/run
LOG=$STATE_DIR/log
MUNGE_DIR=$STATE_DIR/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
DB_DIR=$STATE_DIR/mysql
DB_RUN=$STATE_DIR/mysql-run    # owned by mysql: socket + pid file of mariadbd
DB_SOCKET=$DB_RUN/mariadbd.sock
export SLURM_CONF=$ETC/slurm.conf

# daemon name -> pid file / log file (order = start order; down is the reverse)
DAEMONS="munged mariadbd slurmdbd slurmctld slurmd"
pidfile() { echo "$RUN/$1.pid"; }
logfile() { echo "$LOG/$1.log"; }

PKGS="slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
BINARIES="munged mungekey munge unmunge mariadbd mariadb mariadb-install-db slurmdbd slurmctld slurmd sbatch sacct sacctmgr scontrol sinfo squeue"

# logging must never abort the script (e.g. `down | head` closing the pipe)
log() { echo "[slurm-cluster $(date +%T)] $*" >&2 || true; }
die() { echo "[slurm-cluster] ERROR: $*" >&2 || true; exit 1; }

# die_daemon <daemon> <what went wrong>: name the daemon and show its log tail
die_daemon() {
  local d=$1; shift
  local f; f=$(logfile "$d")
  {
    echo "[slurm-cluster] ERROR: $d: $*"
    echo "[slurm-cluster] log file: $f (also $f.out for stdout/stderr)"
    if [ -s "$f" ]; then echo "----- tail $f -----"; tail -n 25 "$f"; fi
    # stdout/stderr of the daemon: mostly a copy of its log, but start-up
    # errors before the log is opened only show up here
    if [ -s "$f.out" ]; then echo "----- tail $f.out -----"; tail -n "$([ -s "$f" ] && echo 5 || echo 25)" "$f.out"; fi
    echo "-----"
    echo "[slurm-cluster] daemons left running; stop them with: bash $0 down"
  } >&2
  exit 1
}

pid_of() { local f; f=$(pidfile "$1"); [ -s "$f" ] && cat "$f"; }
# running <pid>: process exists and is not a zombie (an exited daemon stays a
# zombie until the container's init reaps it, which can take seconds)
running() {
  kill -0 "$1" 2>/dev/null || return 1
  local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || echo Z)
  [ "$st" != Z ]
}
alive() { local p; p=$(pid_of "$1") && [ -n "$p" ] && running "$p"; }

# wait_until <daemon> <description> <cmd...>: poll cmd every 0.5 s for at most
# WAIT_S seconds; give up early when the daemon's process has exited.
wait_until() {
  local d=$1 what=$2; shift 2
  local deadline=$((SECONDS + WAIT_S))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    alive "$d" || die_daemon "$d" "process exited while waiting for: $what"
    sleep 0.5
  done
  die_daemon "$d" "not ready after ${WAIT_S}s (waiting for: $what)"
}

# start_bg <daemon> <cmd...>: start a foreground-mode daemon in its own session,
# detached from our stdin/stdout/stderr, and record its PID.
start_bg() {
  local d=$1; shift
  rm -f "$(pidfile "$d")"
  setsid "$@" </dev/null >>"$(logfile "$d").out" 2>&1 &
  echo $! >"$(pidfile "$d")"
  # (a background child of a non-interactive shell is never a process-group
  # leader, so setsid execs in place and $! is the daemon's own PID)
  sleep 0.3
  alive "$d" || die_daemon "$d" "exited immediately after start"
}

# ---------------------------------------------------------------- packages
install_packages() {
  local missing=""
  for b in $BINARIES; do command -v "$b" >/dev/null 2>&1 || missing="$missing $b"; done
  [ -z "$missing" ] && return 0
  log "missing binaries:$missing -> apt-get install $PKGS"
  command -v apt-get >/dev/null || die "apt-get not found; install these Debian packages by hand: $PKGS"
  # never let package scripts start services on their default ports/dirs
  local policy_added=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy_added=1
  fi
  local apt_opts="-y -q --no-install-recommends -o DPkg::Lock::Timeout=120"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  if ! apt-get install $apt_opts $PKGS >"$STATE_DIR/apt.log" 2>&1; then
    log "apt-get install failed; running apt-get update and retrying"
    # shellcheck disable=SC2086
    if ! { timeout 300 apt-get update -q -o DPkg::Lock::Timeout=120 &&
           apt-get install $apt_opts $PKGS; } >>"$STATE_DIR/apt.log" 2>&1; then
      [ "$policy_added" = 1 ] && rm -f /usr/sbin/policy-rc.d
      tail -n 20 "$STATE_DIR/apt.log" >&2
      die "apt-get install $PKGS failed (full log: $STATE_DIR/apt.log)"
    fi
  fi
  [ "$policy_added" = 1 ] && rm -f /usr/sbin/policy-rc.d
  missing=""
  for b in $BINARIES; do command -v "$b" >/dev/null 2>&1 || missing="$missing $b"; done
  [ -z "$missing" ] || die "still missing after apt-get install:$missing (log: $STATE_DIR/apt.log)"
}

# ---------------------------------------------------------------- configs
write_configs() {
  local cpus mem_mb
  cpus=${DIFFSMOOTH_SLURM_CPUS:-$(nproc)}
  mem_mb=${DIFFSMOOTH_SLURM_MEM_MB:-$(awk '/^MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)}
  cat >"$ETC/slurm.conf" <<EOF
# generated by .ci/slurm-cluster.sh -- throwaway single-node test cluster
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
MpiDefault=none
MailProg=/bin/true
# no cgroup delegation in containers
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job with no --mem takes the whole node
DefMemPerCPU=1000
SchedulerType=sched/backfill
ReturnToService=2
# use the node as configured here, even if it advertises more CPUs than cores
SlurmdParameters=config_overrides
# finished jobs stay visible to squeue/scontrol for 10 min
MinJobAge=600
StateSaveLocation=$STATE_DIR/spool/slurmctld
SlurmdSpoolDir=$STATE_DIR/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.daemon.pid
SlurmdPidFile=$RUN/slurmd.daemon.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
# for accounting_storage/slurmdbd this names the (private) munge socket
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$GPUS State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
EOF
  # fake GPUs: without File= slurmd reports 0 GPUs and the node is drained, and
  # File= must be a character device (else no CUDA_VISIBLE_DEVICES in jobs).
  # One GPU is /dev/null; more are extra /dev/null-like nodes in the state dir.
  if [ "$GPUS" = 1 ]; then
    echo "NodeName=$NODE Name=gpu File=/dev/null" >"$ETC/gres.conf"
  else
    mkdir -p "$STATE_DIR/fake-gpu"
    for i in $(seq 0 $((GPUS - 1))); do
      [ -c "$STATE_DIR/fake-gpu/gpu$i" ] || { rm -f "$STATE_DIR/fake-gpu/gpu$i";
        mknod -m 0666 "$STATE_DIR/fake-gpu/gpu$i" c 1 3; } ||
        die "cannot create fake GPU device $STATE_DIR/fake-gpu/gpu$i (mknod); use DIFFSMOOTH_SLURM_GPUS=1"
    done
    echo "NodeName=$NODE Name=gpu File=$STATE_DIR/fake-gpu/gpu[0-$((GPUS - 1))]" >"$ETC/gres.conf"
  fi
  cat >"$ETC/slurmdbd.conf" <<EOF
# generated by .ci/slurm-cluster.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$RUN/slurmdbd.daemon.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=diffsmooth-ci-only
EOF
  chmod 600 "$ETC/slurmdbd.conf"
}

link_etc() {
  mkdir -p /etc/slurm
  if [ -L "$ETC_LINK" ] || [ ! -e "$ETC_LINK" ]; then
    ln -sfn "$ETC/slurm.conf" "$ETC_LINK"
  elif [ "$(readlink -f "$ETC_LINK")" != "$ETC/slurm.conf" ]; then
    die "$ETC_LINK exists and was not created by this script; not touching it. Move it away, or use this cluster with: export SLURM_CONF=$ETC/slurm.conf"
  fi
}

unlink_etc() {
  if [ -L "$ETC_LINK" ] && [ "$(readlink "$ETC_LINK")" = "$ETC/slurm.conf" ]; then rm -f "$ETC_LINK"; fi
}

# ---------------------------------------------------------------- daemons
munge_ok() { munge -n --socket="$MUNGE_SOCKET" | unmunge --socket="$MUNGE_SOCKET"; }

start_munged() {
  if alive munged && munge_ok >/dev/null 2>&1; then log "munged already running"; return; fi
  install -d -o munge -g munge -m 0755 "$MUNGE_DIR"
  if [ ! -s "$MUNGE_DIR/munge.key" ]; then
    mungekey --create --keyfile="$MUNGE_DIR/munge.key" >/dev/null 2>&1 ||
      dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
  fi
  chown munge:munge "$MUNGE_DIR/munge.key"; chmod 0400 "$MUNGE_DIR/munge.key"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  : >"$(logfile munged)"; chown munge:munge "$(logfile munged)"
  start_bg munged setpriv --reuid=munge --regid=munge --init-groups \
    munged --foreground --force --num-threads=10 --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
    --log-file="$(logfile munged)" --pid-file="$MUNGE_DIR/munged.pid" --seed-file="$MUNGE_DIR/munged.seed"
  wait_until munged "munge -n | unmunge" munge_ok
}

db() { mariadb --no-defaults --socket="$DB_SOCKET" -uroot "$@"; }

start_mariadbd() {
  if alive mariadbd && db -e 'select 1' >/dev/null 2>&1; then log "mariadbd already running"; return; fi
  install -d -o mysql -g mysql -m 0750 "$DB_DIR"
  install -d -o mysql -g mysql -m 0755 "$DB_RUN"
  if [ ! -d "$DB_DIR/mysql" ]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" \
      --auth-root-authentication-method=socket >"$(logfile mariadbd).install" 2>&1 ||
      { tail -n 20 "$(logfile mariadbd).install" >&2; die "mariadb-install-db failed (log: $(logfile mariadbd).install)"; }
  fi
  : >"$(logfile mariadbd)"; chown mysql:mysql "$(logfile mariadbd)"
  start_bg mariadbd setpriv --reuid=mysql --regid=mysql --init-groups \
    mariadbd --no-defaults --datadir="$DB_DIR" --socket="$DB_SOCKET" --pid-file="$DB_RUN/mariadbd.pid" \
    --port="$DB_PORT" --bind-address=127.0.0.1 --log-error="$(logfile mariadbd)" \
    --innodb-buffer-pool-size=64M --innodb-use-native-aio=0 --performance-schema=OFF --skip-name-resolve
  wait_until mariadbd "SELECT 1 on $DB_SOCKET" db -e 'select 1'
  db -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
         CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'diffsmooth-ci-only';
         CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'diffsmooth-ci-only';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
         FLUSH PRIVILEGES;" || die_daemon mariadbd "could not create the slurm database/user"
}

start_slurmdbd() {
  if alive slurmdbd && sacctmgr -n list cluster >/dev/null 2>&1; then log "slurmdbd already running"; return; fi
  start_bg slurmdbd slurmdbd -D
  wait_until slurmdbd "sacctmgr list cluster" sacctmgr -n list cluster
}

# cluster, account and user root; idempotent. Must run before slurmctld starts
# (AccountingStorageEnforce=associations rejects jobs without an association).
setup_accounting() {
  sacctmgr -n list cluster format=cluster%40 | grep -qw "$CLUSTER" ||
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die_daemon slurmdbd "sacctmgr add cluster $CLUSTER failed"
  sacctmgr -n list account format=account%40 | grep -qw "$ACCOUNT" ||
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=diffsmooth-ci Organization=diffsmooth >/dev/null ||
    die_daemon slurmdbd "sacctmgr add account $ACCOUNT failed"
  sacctmgr -n list assoc user=root account="$ACCOUNT" format=account%40 | grep -qw "$ACCOUNT" ||
    sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" Cluster="$CLUSTER" >/dev/null ||
    die_daemon slurmdbd "sacctmgr add user root failed"
}

start_slurmctld() {
  if alive slurmctld && scontrol ping >/dev/null 2>&1; then log "slurmctld already running"; return; fi
  start_bg slurmctld slurmctld -D -i
  wait_until slurmctld "scontrol ping" sh -c 'scontrol ping | grep -q "is UP"'
}

node_idle() { sinfo -h -n "$NODE" -o %T | grep -Eqx 'idle|mixed|allocated'; }

start_slurmd() {
  if alive slurmd && node_idle; then log "slurmd already running"; return; fi
  start_bg slurmd slurmd -D
  # a node left drained/down by an earlier run would never become idle
  if sinfo -h -n "$NODE" -o %T 2>/dev/null | grep -Eq 'drain|down'; then
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
  fi
  wait_until slurmd "node $NODE idle in sinfo" node_idle
}

# ---------------------------------------------------------------- smoke test
smoke_test() {
  local j state=""
  # shellcheck disable=SC2016  # $CUDA_VISIBLE_DEVICES is for the job's shell
  j=$(sbatch --parsable -p gpu -A "$ACCOUNT" --gpus=1 -t 2 --mem=100 -J diffsmooth-smoke \
        -o "$LOG/smoke-%j.out" --wrap 'echo "GPU=$CUDA_VISIBLE_DEVICES"') ||
    die_daemon slurmctld "sbatch of the smoke-test job was rejected"
  local deadline=$((SECONDS + WAIT_S))
  while [ "$SECONDS" -lt "$deadline" ]; do
    # the plugin's own status query goes through sacct, so check it that way
    state=$(sacct -X -n --parsable2 -j "$j" -o State 2>/dev/null | head -n1 || true)
    case "$state" in
      COMPLETED) log "smoke job $j COMPLETED (seen by sacct)"; return 0 ;;
      FAILED|CANCELLED*|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY)
        cat "$LOG/smoke-$j.out" >&2 2>/dev/null || true
        die_daemon slurmd "smoke job $j ended in state $state" ;;
    esac
    sleep 0.5
  done
  squeue -t all >&2 || true
  die_daemon slurmctld "smoke job $j not COMPLETED in sacct after ${WAIT_S}s (last state: '${state:-none}')"
}

# ---------------------------------------------------------------- commands
all_up() {
  for d in $DAEMONS; do alive "$d" || return 1; done
  [ -e "$ETC_LINK" ] && scontrol ping 2>/dev/null | grep -q "is UP" && node_idle
}

cmd_up() {
  [ "$(id -u)" = 0 ] || die "run as root (starts daemons as root/munge/mysql users)"
  if [ -d "$RUN" ] && all_up 2>/dev/null; then
    log "already up (state dir $STATE_DIR); nothing to do (to apply changed settings: down, then up)"
    return 0
  fi
  local t0=$SECONDS
  mkdir -p "$STATE_DIR" "$ETC" "$RUN" "$LOG" "$STATE_DIR/spool/slurmctld" "$STATE_DIR/spool/slurmd"
  chmod 0755 "$STATE_DIR" "$RUN" "$LOG"
  install_packages
  write_configs
  link_etc
  start_munged
  start_mariadbd
  start_slurmdbd
  setup_accounting
  start_slurmctld
  start_slurmd
  smoke_test
  log "SLURM up in $((SECONDS - t0))s: cluster $CLUSTER, account $ACCOUNT, node $NODE ($(sinfo -h -n "$NODE" -o '%c CPUs, %m MB, %G' | head -n1)), partitions: $(sinfo -h -o %P | tr '\n' ' ')"
  log "state + logs in $STATE_DIR; stop with: bash $0 down"
}

cmd_down() {
  trap '' PIPE HUP INT   # finish stopping everything even if our output goes away
  local any=0 order="slurmd slurmctld slurmdbd mariadbd munged"
  # cancel leftover jobs (e.g. of a timed-out test) so no job step outlives slurmd
  if alive slurmctld && [ -n "$(timeout 10 squeue -h -o %i 2>/dev/null)" ]; then
    log "cancelling leftover jobs: $(timeout 10 squeue -h -o %i | tr '\n' ' ')"
    timeout 10 scancel --user=root >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 20))
    while [ -n "$(timeout 10 squeue -h -t running,completing -o %i 2>/dev/null)" ] && [ "$SECONDS" -lt "$deadline" ]; do
      sleep 0.5
    done
  fi
  for d in $order; do
    local p; p=$(pid_of "$d" || true)
    if [ -n "$p" ] && running "$p"; then
      any=1; log "stopping $d (pid $p)"; kill -TERM "$p" 2>/dev/null || true
      local deadline=$((SECONDS + 30))
      while running "$p" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
      if running "$p"; then
        log "$d (pid $p) still alive after 30s; sending SIGKILL"; kill -KILL "$p" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while running "$p" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        running "$p" && die "could not stop $d (pid $p)"
      fi
    fi
    rm -f "$(pidfile "$d")"
  done
  unlink_etc
  if [ "$any" = 1 ]; then
    log "all daemons stopped (state kept in $STATE_DIR; rm -rf it for a clean start)"
  else
    log "nothing was running"
  fi
}

cmd_status() {
  local rc=0
  for d in $DAEMONS; do
    if alive "$d"; then echo "$d: running (pid $(pid_of "$d"))"; else echo "$d: NOT running (log: $(logfile "$d"))"; rc=1; fi
  done
  if [ "$rc" = 0 ]; then
    sinfo -o '%P %a %D %T %c %m %G' || rc=1
    sacctmgr -n list assoc format=cluster,account,user || rc=1
  fi
  [ "$rc" = 0 ] && echo "SLURM cluster is up (SLURM_CONF=$ETC/slurm.conf, linked from $ETC_LINK)" ||
    echo "SLURM cluster is NOT (fully) up; state dir $STATE_DIR"
  return "$rc"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status   (state dir: \$DIFFSMOOTH_SLURM_DIR, default \${TMPDIR:-/tmp}/diffsmooth-slurm)" >&2; exit 2 ;;
esac
