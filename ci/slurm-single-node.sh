#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, from Debian's packages (Debian 12: Slurm 22.05), as root.
# `.ci/run` starts it before the tests (the `slurm` tests submit to it); on a laptop it lets you try
# `--executor slurm` (README, "On a cluster"). No systemd needed: the daemons run from their binaries.
#
#   sudo bash ci/slurm-single-node.sh         install what is missing, write the configs, start what is
#                                             not running, wait until a job runs (idempotent)
#   sudo bash ci/slurm-single-node.sh stop    stop the daemons (by their pid files); the packages stay
#
# What it runs: munged (as the munge user), MariaDB on localhost + slurmdbd (accounting: submitit reads
# job states with `sacct`), slurmctld and slurmd; one partition with this machine as its only node.
# Environment:
#   SLURM_PARTITION   partition name (default debug)
#   SLURM_CPUS        CPUs the node offers (default: this machine's cores, at least 8). More than the
#                     cores is allowed (config_overrides) so several small jobs run at once.
#   SLURM_ACCOUNTING  0: no MariaDB/slurmdbd (sacct then says "accounting storage is disabled")
#   SLURM_CRED_EXPIRE seconds before a requeued job may start again (default 10; Slurm's 120 would
#                     make every checkpoint-and-requeue wait two minutes)
#   SLURM_FORCE=1     replace a slurm.conf this script did not write (otherwise it stops: not yours)
# Daemons and jobs inherit the caller's nice value (start it under `nice -n 19` on a shared machine).
set -euo pipefail

PART=${SLURM_PARTITION:-debug}
ACCT=${SLURM_ACCOUNTING:-1}
CRED_EXPIRE=${SLURM_CRED_EXPIRE:-10}
CORES=$(nproc)
CPUS=${SLURM_CPUS:-$((CORES > 8 ? CORES : 8))}
HOST=$(hostname -s)
CONF=/etc/slurm/slurm.conf
DBDCONF=/etc/slurm/slurmdbd.conf
LOGDIR=/var/log/slurm
DBPASS=gqnbench-slurmdbd
T0=$SECONDS

say() { echo "[slurm-single-node] $*"; }
die() { echo "[slurm-single-node] error: $*" >&2; exit 1; }

pid_of() {  # pid_of PIDFILE NAME: the pid in PIDFILE if it is a live process called NAME
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}

alive() {  # alive PID: exists and is not a zombie
  [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

stop_daemon() {  # stop_daemon PIDFILE NAME: SIGTERM and wait for the process (it removes its pid file early)
  local pid
  if pid=$(pid_of "$1" "$2"); then
    kill "$pid"
    for _ in $(seq 300); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && die "$2 (pid $pid) still running 30 s after SIGTERM"
    say "stopped $2 (pid $pid)"
  fi
  rm -f "$1"
}

until_ok() {  # until_ok SECONDS WHAT COMMAND...: retry COMMAND every 0.2 s
  local secs=$1 what=$2
  shift 2
  for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "no $what after ${secs} s (logs in $LOGDIR)"
}

if [ "${1:-start}" = stop ]; then
  stop_daemon /run/slurmd.pid slurmd
  stop_daemon /run/slurmctld.pid slurmctld
  stop_daemon /run/slurmdbd.pid slurmdbd
  stop_daemon /run/mysqld/mysqld.pid mariadbd
  stop_daemon /run/munge/munged.pid munged
  exit 0
fi
[ "${1:-start}" = start ] || die "usage: $0 [start|stop]"
[ "$(id -u)" = 0 ] || die "run as root (sudo)"

# 1. Packages: without recommends, about 8 packages (3 MB), 28 with MariaDB. Their maintainer scripts
#    must not start the daemons through systemd/init (they would run with the packaged defaults and
#    hold the pid files): a policy-rc.d that says "no" while apt runs.
pkgs=(munge slurmctld slurmd slurm-client)
[ "$ACCT" = 1 ] && pkgs+=(slurmdbd mariadb-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$own_policy" = 1 ] && rm -f "$policy"
fi

# 2. slurmd finds its node by this machine's short name.
getent hosts "$HOST" >/dev/null || { echo "127.0.0.1 $HOST" >>/etc/hosts; say "added $HOST to /etc/hosts"; }

# 3. munge (the package made the key): the daemon runs as the munge user.
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 755 /run/munge
pid_of /run/munge/munged.pid munged >/dev/null || { runuser -u munge -- /usr/sbin/munged; say "started munged"; }
until_ok 20 munge bash -c 'munge -n | unmunge'

# 4. slurm.conf. No cgroups and no systemd: processes are tracked by pid, tasks are not bound to cores.
install -d -m 755 /var/spool/slurmctld /var/spool/slurmd "$LOGDIR"
mem=$(slurmd -C | grep -o 'RealMemory=[0-9]*') || die "slurmd -C printed no memory: $(slurmd -C)"
if [ "$ACCT" = 1 ]; then
  accounting=$'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost'
else
  accounting=AccountingStorageType=accounting_storage/none
fi
new=$(mktemp)
cat >"$new" <<EOF
# written by gqnbench's ci/slurm-single-node.sh
ClusterName=gqnbench
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=$CRED_EXPIRE
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$accounting
NodeName=$HOST CPUs=$CPUS $mem State=UNKNOWN
PartitionName=$PART Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
conf_changed=0
if [ -s "$CONF" ] && ! head -n 1 "$CONF" | grep -q "ci/slurm-single-node.sh" && [ "${SLURM_FORCE:-0}" != 1 ]; then
  rm -f "$new"
  die "$CONF exists and was not written by this script; move it away (or SLURM_FORCE=1 to replace it)"
fi
if ! cmp -s "$new" "$CONF"; then
  install -m 644 "$new" "$CONF"
  conf_changed=1
  say "wrote $CONF"
fi
rm -f "$new"

# 5. Accounting: MariaDB (socket and 127.0.0.1 only) and slurmdbd.
if [ "$ACCT" = 1 ]; then
  install -d -o mysql -g mysql -m 755 /run/mysqld
  if ! pid_of /run/mysqld/mysqld.pid mariadbd >/dev/null; then
    nohup /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
      >>"$LOGDIR/mariadb.log" 2>&1 </dev/null &
    say "started mariadbd"
  fi
  until_ok 60 MariaDB mariadb-admin ping
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  dbd=$(mktemp)
  cat >"$dbd" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=$LOGDIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
EOF
  if ! cmp -s "$dbd" "$DBDCONF"; then
    install -m 600 "$dbd" "$DBDCONF"
    stop_daemon /run/slurmdbd.pid slurmdbd
  fi
  rm -f "$dbd"
  pid_of /run/slurmdbd.pid slurmdbd >/dev/null || { /usr/sbin/slurmdbd; say "started slurmdbd"; }
  until_ok 60 slurmdbd sacctmgr -n list cluster
fi

# 6. slurmctld and slurmd, restarted after a slurm.conf change (both must read the same file).
if [ "$conf_changed" = 1 ]; then
  stop_daemon /run/slurmd.pid slurmd
  stop_daemon /run/slurmctld.pid slurmctld
fi
pid_of /run/slurmctld.pid slurmctld >/dev/null || { /usr/sbin/slurmctld; say "started slurmctld"; }
until_ok 30 slurmctld scontrol ping
pid_of /run/slurmd.pid slurmd >/dev/null || { /usr/sbin/slurmd; say "started slurmd"; }
node_up() { sinfo -h -n "$HOST" -o %T | grep -Eq '^(idle|mixed|allocated|completing)$'; }
for _ in $(seq 100); do node_up && break; sleep 0.2; done
if ! node_up; then  # left down or drained by an earlier run
  scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true
  until_ok 30 "idle node $HOST" node_up
fi

# 7. A job step runs and (with accounting) sacct answers.
out=$(timeout 60 srun -N1 -n1 -t 1 -p "$PART" hostname 2>&1) || die "srun failed: $out"
if [ "$ACCT" = 1 ]; then sacct -n -X -o JobID >/dev/null || die "sacct does not answer"; fi
say "ready in $((SECONDS - T0)) s: partition $PART, node $HOST with $CPUS CPUs ($CORES cores), accounting=$ACCT"
