#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for the Slurm launcher's tests (docs/platform.md,
# "Slurm, for real, on one machine"): Debian's Slurm 22.05 + munge + libpmix2.
#
#   tools/slurm_one_node.sh install        apt packages (root; once per machine)
#   tools/slurm_one_node.sh start DIR      munged, slurmctld and slurmd with DIR/slurm.conf
#   tools/slurm_one_node.sh stop DIR
#
# Clients then need SLURM_CONF=DIR/slurm.conf. Ports are not Slurm's defaults, and every state,
# spool, log and pid path is under DIR, so it does not collide with a real installation.
set -euo pipefail

# libpmix-dev: Slurm's mpi/pmix plugin dlopens the unversioned libpmix.so, which only the -dev
# package ships (without it: "pmi/pmix: can not load PMIx library").
PKGS="slurmctld slurmd slurm-client munge libpmix2 libpmix-dev"

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
     && command -v munged >/dev/null && ls /usr/lib/*/libpmix.so >/dev/null 2>&1; then
    return 0
  fi
  [ "$(id -u)" = 0 ] || { echo "slurm_one_node: installing $PKGS needs root" >&2; exit 3; }
  command -v apt-get >/dev/null || { echo "slurm_one_node: no apt-get on this machine" >&2; exit 3; }
  export DEBIAN_FRONTEND=noninteractive
  # libpmix goes in with the rest, before slurmd first starts (else its pmix plugin fails to load)
  apt-get install -y -q $PKGS >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $PKGS >/dev/null; }
}

start() {
  local dir=$1 host cpus
  host=$(hostname -s)
  cpus=$(nproc)
  mkdir -p "$dir"/{state,spool,log}
  # munge: a key, and the daemon as user munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
  # a munged without its socket (e.g. its package removed and reinstalled under it) cannot serve
  if ! pgrep -x munged >/dev/null || [ ! -S /run/munge/munge.socket.2 ]; then
    pkill -x munged 2>/dev/null && sleep 1 || true
    runuser -u munge -- /usr/sbin/munged
  fi
  cat > "$dir/slurm.conf" <<EOF
ClusterName=lbbench
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
  slurmctld -f "$dir/slurm.conf"
  slurmd -f "$dir/slurm.conf"
  for _ in $(seq 60); do
    if SLURM_CONF="$dir/slurm.conf" sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
      echo "slurm_one_node: $host up ($cpus CPUs), SLURM_CONF=$dir/slurm.conf"
      return 0
    fi
    sleep 1
  done
  echo "slurm_one_node: the node did not come up; logs in $dir/log" >&2
  tail -n 5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
  stop "$dir"
  exit 4
}

stop() {
  local dir=$1 pidfile
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
    [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 1
}

case "${1:-}" in
  install) install ;;
  start) install && start "${2:?directory}" ;;
  stop) stop "${2:?directory}" ;;
  *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
