#!/usr/bin/env bash
# tests/harness/services.sh: private redis-server and mariadbd for `make run`, `make test` and CI.
#
#   services.sh start DIR        start both (or reuse live ones), write DIR/env
#   services.sh stop DIR         stop both: SIGTERM, then SIGKILL after a grace period
#   services.sh status DIR       print the state of both; exit 0 only if both answer
#   services.sh redis-stop DIR   SIGKILL redis-server (simulated crash)
#   services.sh redis-start DIR  start redis-server again on the port it had
#   services.sh mysql-stop DIR   SIGKILL mariadbd (simulated crash)
#   services.sh mysql-start DIR  start mariadbd again on the port it had (same datadir)
#   services.sh cluster-start DIR       start a 3-master Redis Cluster (or reuse a live one), add it to DIR/env;
#                                       with SK_CLUSTER_REPLICAS=1, a replica per master (6 nodes)
#   services.sh cluster-stop DIR        stop the cluster's nodes (`stop` does too)
#   services.sh cluster-node-stop DIR N   SIGKILL cluster node N (1..3, or 1..6 with replicas; simulated crash)
#   services.sh cluster-node-start DIR N  start node N again on its port (it rejoins from its nodes.conf)
#
# Everything lives under DIR, and nothing touches the system's own redis/mariadb services:
#   DIR/env                 `export` lines for SECKILLD_REDIS, SECKILLD_MYSQL and SK_* (source it)
#   DIR/redis/              redis.pid, redis.log, port (no data files: --save '' and appendonly off)
#   DIR/mysql/              mariadbd datadir (it survives mysql-stop/-start, so InnoDB recovers)
#   DIR/mysql.{pid,log,port,sock}
#   DIR/cluster/nN/         cluster node N (1..3): redis.pid, redis.log, port, nodes.conf (no data files)
#   DIR/cluster/replicas    replicas per master the cluster was created with (nodes 4..6 are replicas)
#
# Ports are picked at random below the kernel's ephemeral range and probed, so they collide
# neither with other runs nor with the client ports that wrk and the server's pools use.
# A restart reuses the old port, because a running seckilld has it in its config.
set -euo pipefail

HARNESS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
TIMEOUT=${SK_SERVICE_TIMEOUT:-60} # seconds to wait for a service to answer
STOP_GRACE=${SK_STOP_GRACE:-15}   # seconds between SIGTERM and SIGKILL
DB_NAME=seckill DB_USER=seckill DB_PASS=seckill

say() { echo "services.sh: $*"; }
die() {
    echo "services.sh: $*" >&2
    exit 1
}
usage() {
    sed -n '3,15p' "$HARNESS" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -eq 2 ] || [ $# -eq 3 ] || usage
cmd=$1
dir=$(realpath -m -- "$2") # absolute: daemons must not depend on our cwd, and env is sourced from anywhere

REDIS_DIR=$dir/redis
REDIS_PID=$REDIS_DIR/redis.pid
REDIS_LOG=$REDIS_DIR/redis.log
REDIS_PORT_FILE=$REDIS_DIR/port
CLUSTER_DIR=$dir/cluster
# replicas per master: what a live cluster was made with, else what cluster-start is asked for
if [ "$cmd" = cluster-start ]; then
    CLUSTER_REPLICAS=${SK_CLUSTER_REPLICAS:-0}
    [ "$CLUSTER_REPLICAS" = 0 ] || [ "$CLUSTER_REPLICAS" = 1 ] || die "SK_CLUSTER_REPLICAS must be 0 or 1"
else
    CLUSTER_REPLICAS=$(cat "$CLUSTER_DIR/replicas" 2>/dev/null || echo 0)
fi
CLUSTER_NODES=$((3 * (1 + CLUSTER_REPLICAS)))
MYSQL_DATA=$dir/mysql
MYSQL_PID=$dir/mysql.pid
MYSQL_LOG=$dir/mysql.log
MYSQL_PORT_FILE=$dir/mysql.port
MYSQL_SOCK=$dir/mysql.sock
# sun_path holds 108 bytes; a deep checkout would make mariadbd fail with an obscure error.
if [ ${#MYSQL_SOCK} -gt 100 ]; then
    MYSQL_SOCK=/tmp/seckilld-mysql-$(printf '%s' "$dir" | md5sum | cut -c1-12).sock
fi
ENV_FILE=$dir/env

# ---------------------------------------------------------------- process helpers

# pid_of PIDFILE COMM: print the pid if the file names a live (non-zombie) process called COMM.
# The name check guards against a stale pidfile whose pid the kernel has since reused.
# Orphaned daemons are reparented to PID 1, which may not reap zombies in a container, so a
# zombie counts as dead.
pid_of() {
    local pid state
    [ -s "$1" ] || return 1
    pid=$(tr -dc '0-9' <"$1")
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
    state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
    [ -n "$state" ] && [ "$state" != Z ] || return 1
    echo "$pid"
}

# gone PID: true once the process no longer runs (absent or zombie).
gone() {
    local state
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 0
    [ -z "$state" ] || [ "$state" = Z ]
}

# stop_pid NAME PIDFILE COMM HARD: stop the daemon named by PIDFILE. With HARD=1 it gets
# SIGKILL at once (a crash); otherwise SIGTERM and SIGKILL after STOP_GRACE seconds. Never fails.
stop_pid() {
    local name=$1 pidfile=$2 comm=$3 hard=$4 pid i
    if ! pid=$(pid_of "$pidfile" "$comm"); then
        rm -f "$pidfile"
        return 0
    fi
    if [ "$hard" = 1 ]; then
        kill -KILL "$pid" 2>/dev/null || true
    else
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < STOP_GRACE * 10; i++)); do
            gone "$pid" && break
            sleep 0.1
        done
        if ! gone "$pid"; then
            say "$name (pid $pid) ignored SIGTERM for ${STOP_GRACE}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    # SIGKILL is asynchronous. Wait, so that a following start finds the port and datadir free.
    for ((i = 0; i < 100; i++)); do
        gone "$pid" && break
        sleep 0.1
    done
    gone "$pid" || die "$name (pid $pid) is still running after SIGKILL"
    rm -f "$pidfile"
    say "$name stopped (pid $pid$([ "$hard" = 1 ] && echo ', SIGKILL'))"
}

# spawn PIDFILE LOG CMD...: start CMD detached in its own session, so that Ctrl-C in the
# terminal of `make run` reaches seckilld but not the services, which the caller's trap stops
# in order. stdin/stdout/stderr and the lock fd are not inherited, so a daemon never holds a
# CI pipe or our lock open. The background job isn't a process-group leader, so setsid
# execs in place and $! is the daemon's pid. We record it at once (so `stop` can find a daemon
# that is still starting up); the daemon later rewrites the same file with the same pid.
SPAWNED_PID=
spawn() {
    local pidfile=$1 log=$2
    shift 2
    setsid "$@" </dev/null >>"$log" 2>&1 9>&- &
    SPAWNED_PID=$!
    echo "$SPAWNED_PID" >"$pidfile"
}

# fail_with_log NAME LOG WHY: the one place a start failure is reported. It shows the log of
# the last attempt only (each launch writes a "--- <date>" marker line first).
fail_with_log() {
    {
        echo "services.sh: FAILED to start $1: $3"
        echo "services.sh: $2 (last attempt):"
        tac "$2" 2>/dev/null | sed '/^--- /q' | tac | tail -n 25 | sed 's/^/    /'
    } >&2
}

# ---------------------------------------------------------------- ports

# pick_port: print a free loopback port below the ephemeral range (SO_REUSEADDR like the
# servers, so TIME_WAIT leftovers don't count as taken).
pick_port() {
    python3 - <<'PY'
import random, socket
lo = int(open('/proc/sys/net/ipv4/ip_local_port_range').read().split()[0])
candidates = (lambda: random.randint(10000, lo - 1)) if lo > 11000 else (lambda: 0)
for _ in range(500):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(('127.0.0.1', candidates()))
        print(s.getsockname()[1])
        break
    except OSError:
        pass
    finally:
        s.close()
else:
    raise SystemExit('no free port found')
PY
}

# port_free PORT: true if nothing listens on 127.0.0.1:PORT.
port_free() {
    python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try: s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError: sys.exit(1)
' "$1"
}

# choose_port PORTFILE MODE: with MODE=same the recorded port (it must exist); with
# MODE=any the recorded port if it is still free, otherwise a fresh one.
choose_port() {
    local old=""
    [ -s "$1" ] && old=$(tr -dc '0-9' <"$1")
    if [ "$2" = same ]; then
        [ -n "$old" ] || return 1
        echo "$old"
    elif [ -n "$old" ] && port_free "$old"; then
        echo "$old"
    else
        pick_port
    fi
}

# ---------------------------------------------------------------- redis

redis_ping() {
    [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]
}

# redis_alive: the recorded daemon runs and answers on the recorded port.
redis_alive() {
    local port
    pid_of "$REDIS_PID" redis-server >/dev/null && [ -s "$REDIS_PORT_FILE" ] || return 1
    port=$(cat "$REDIS_PORT_FILE")
    redis_ping "$port"
}

# redis_launch PORT: returns 0 when it answers, 2 if the port was taken, 1 on any other failure.
redis_launch() {
    local port=$1 pid
    mkdir -p "$REDIS_DIR"
    echo "--- $(date '+%F %T') starting on port $port" >>"$REDIS_LOG"
    # No persistence (--save '' with appendonly off): a restart after redis-stop starts empty, like
    # a lost cache node. DEBUG is enabled on loopback so tests can inject latency (DEBUG SLEEP).
    spawn "$REDIS_PID" "$REDIS_LOG" redis-server \
        --bind 127.0.0.1 --port "$port" --daemonize no \
        --pidfile "$REDIS_PID" --logfile "" --dir "$REDIS_DIR" \
        --save '' --appendonly no --enable-debug-command local
    pid=$SPAWNED_PID
    local deadline=$((SECONDS + TIMEOUT)) # a wall-clock bound: a hung daemon makes each ping slow
    while [ "$SECONDS" -lt "$deadline" ]; do
        if redis_ping "$port"; then
            echo "$port" >"$REDIS_PORT_FILE"
            return 0
        fi
        if gone "$pid"; then
            grep -q 'Address already in use' <(tail -n 20 "$REDIS_LOG") && return 2
            fail_with_log redis-server "$REDIS_LOG" "the process exited"
            return 1
        fi
        sleep 0.1
    done
    fail_with_log redis-server "$REDIS_LOG" "no PONG on 127.0.0.1:$port within ${TIMEOUT}s"
    stop_pid redis-server "$REDIS_PID" redis-server 1 >/dev/null
    return 1
}

# ensure_redis MODE: reuse a live redis, or start one (MODE as for choose_port).
# Sets REDIS_STARTED=1 if it started a new one.
REDIS_STARTED=0
ensure_redis() {
    local port tries rc
    if redis_alive; then
        say "redis-server already running (pid $(cat "$REDIS_PID"), port $(cat "$REDIS_PORT_FILE"))"
        return 0
    fi
    stop_pid redis-server "$REDIS_PID" redis-server 1 >/dev/null # a live but deaf one
    for ((tries = 0; tries < 5; tries++)); do
        port=$(choose_port "$REDIS_PORT_FILE" "$1") || die "redis-server: no recorded port in $REDIS_PORT_FILE (run start first)"
        rc=0
        redis_launch "$port" || rc=$?
        if [ $rc -eq 0 ]; then
            REDIS_STARTED=1
            say "redis-server running (pid $(cat "$REDIS_PID"), port $port)"
            return 0
        fi
        if [ $rc -eq 2 ] && [ "$1" = any ]; then
            rm -f "$REDIS_PORT_FILE" # lost a race for the port; pick another
            continue
        fi
        [ $rc -eq 2 ] && fail_with_log redis-server "$REDIS_LOG" "port $port is taken by another process"
        return 1
    done
    fail_with_log redis-server "$REDIS_LOG" "no usable port after $tries tries"
    return 1
}

# ---------------------------------------------------------------- redis cluster

# Three masters, no replicas by default (2 cores: the tests kill a master and restart it); SK_CLUSTER_REPLICAS=1
# adds a replica per master for the failover tests, which start such a cluster in a DIR of their own. A short node
# timeout so a killed master is noticed (and its replica promoted) in ~2-4 s, and require-full-coverage off so the
# other masters keep serving their slots meanwhile. No persistence, as the single redis-server: nodes.conf is the
# only file a node keeps.

node_dir() { echo "$CLUSTER_DIR/n$1"; }

# cluster_node_alive N: node N runs and answers on its recorded port.
cluster_node_alive() {
    local d
    d=$(node_dir "$1")
    pid_of "$d/redis.pid" redis-server >/dev/null && [ -s "$d/port" ] && redis_ping "$(cat "$d/port")"
}

# cluster_node_launch N PORT: start node N on PORT; 0 when it answers, 2 if the port was taken, 1 otherwise.
cluster_node_launch() {
    local n=$1 port=$2 d pid
    d=$(node_dir "$n")
    mkdir -p "$d"
    echo "--- $(date '+%F %T') starting cluster node $n on port $port" >>"$d/redis.log"
    spawn "$d/redis.pid" "$d/redis.log" redis-server \
        --bind 127.0.0.1 --port "$port" --daemonize no \
        --pidfile "$d/redis.pid" --logfile "" --dir "$d" \
        --save '' --appendonly no --enable-debug-command local \
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
        --cluster-require-full-coverage no --repl-diskless-sync-delay 0
    pid=$SPAWNED_PID
    local deadline=$((SECONDS + TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if redis_ping "$port"; then
            echo "$port" >"$d/port"
            return 0
        fi
        if gone "$pid"; then
            grep -q 'Address already in use' <(tail -n 20 "$d/redis.log") && return 2
            fail_with_log "cluster node $n" "$d/redis.log" "the process exited"
            return 1
        fi
        sleep 0.1
    done
    fail_with_log "cluster node $n" "$d/redis.log" "no PONG on 127.0.0.1:$port within ${TIMEOUT}s"
    stop_pid "cluster node $n" "$d/redis.pid" redis-server 1 >/dev/null
    return 1
}

# ensure_cluster_node N MODE: start node N (MODE as for choose_port).
ensure_cluster_node() {
    local n=$1 d port tries rc
    d=$(node_dir "$n")
    cluster_node_alive "$n" && return 0
    stop_pid "cluster node $n" "$d/redis.pid" redis-server 1 >/dev/null
    for ((tries = 0; tries < 5; tries++)); do
        port=$(choose_port "$d/port" "$2") || die "cluster node $n: no recorded port (run cluster-start first)"
        rc=0
        cluster_node_launch "$n" "$port" || rc=$?
        [ $rc -eq 0 ] && return 0
        if [ $rc -eq 2 ] && [ "$2" = any ]; then
            rm -f "$d/port"
            continue
        fi
        return 1
    done
    return 1
}

cluster_ports() {
    local n
    for ((n = 1; n <= CLUSTER_NODES; n++)); do cat "$(node_dir "$n")/port"; done
}

# cluster_ok: every node says cluster_state:ok and knows every other node, and every replica has synced (a replica
# that never did refuses to fail over: its data is "too old").
cluster_ok() {
    local p info
    for p in $(cluster_ports); do
        info=$(timeout 2 redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | tr -d '\r') || return 1
        grep -qx 'cluster_state:ok' <<<"$info" || return 1
        grep -qx "cluster_known_nodes:$CLUSTER_NODES" <<<"$info" || return 1
        info=$(timeout 2 redis-cli -h 127.0.0.1 -p "$p" info replication 2>/dev/null | tr -d '\r') || return 1
        grep -qx 'role:slave' <<<"$info" && ! grep -qx 'master_link_status:up' <<<"$info" && return 1
    done
    return 0
}

cluster_alive() {
    local n
    for ((n = 1; n <= CLUSTER_NODES; n++)); do cluster_node_alive "$n" || return 1; done
    cluster_ok
}

cluster_stop_all() {
    local n hard=$1
    for ((n = 1; n <= CLUSTER_NODES; n++)); do
        stop_pid "cluster node $n" "$(node_dir "$n")/redis.pid" redis-server "$hard"
    done
}

cmd_cluster_start() {
    local n ports=() deadline
    lock
    if [ "$(cat "$CLUSTER_DIR/replicas" 2>/dev/null || echo 0)" = "$CLUSTER_REPLICAS" ] && cluster_alive; then
        say "redis cluster already running (ports $(cluster_ports | tr '\n' ' '))"
    else
        # a fresh cluster each time: a half-made one, or one whose ports changed, is not worth repairing
        CLUSTER_NODES=6 cluster_stop_all 1 >/dev/null # whatever shape it had
        rm -rf "$CLUSTER_DIR"
        mkdir -p "$CLUSTER_DIR"
        echo "$CLUSTER_REPLICAS" >"$CLUSTER_DIR/replicas"
        for ((n = 1; n <= CLUSTER_NODES; n++)); do
            ensure_cluster_node "$n" any || {
                cluster_stop_all 1 >/dev/null
                die "cluster-start failed: node $n did not come up"
            }
            ports+=("127.0.0.1:$(cat "$(node_dir "$n")/port")")
        done
        if ! redis-cli --cluster create "${ports[@]}" --cluster-replicas "$CLUSTER_REPLICAS" --cluster-yes >>"$CLUSTER_DIR/create.log" 2>&1; then
            cluster_stop_all 1 >/dev/null
            die "cluster-start failed: redis-cli --cluster create (log: $CLUSTER_DIR/create.log)"
        fi
        deadline=$((SECONDS + TIMEOUT))
        until cluster_ok; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                cluster_stop_all 1 >/dev/null
                die "cluster-start failed: no cluster_state:ok on every node within ${TIMEOUT}s"
            fi
            sleep 0.1
        done
        say "redis cluster running (ports $(cluster_ports | tr '\n' ' '))"
    fi
    write_env
}

# ---------------------------------------------------------------- mariadb

# as_root SQL...: run statements as root over the unix socket (root@localhost, no password).
as_root() {
    mariadb --no-defaults -uroot --socket="$MYSQL_SOCK" --connect-timeout=5 -e "$*"
}

mysql_ping() {
    timeout 10 mariadb-admin --no-defaults -uroot --socket="$MYSQL_SOCK" --connect-timeout=2 ping >/dev/null 2>&1
}

# mysql_alive: the recorded daemon runs and answers (over its socket; the port is checked by start).
mysql_alive() {
    pid_of "$MYSQL_PID" mariadbd >/dev/null && [ -s "$MYSQL_PORT_FILE" ] && mysql_ping
}

# mysql_init_datadir: run mariadb-install-db once per DIR. The marker makes an interrupted
# install start over instead of leaving a half-made datadir that mariadbd would reject later.
mysql_init_datadir() {
    [ -e "$MYSQL_DATA/.sk-initialised" ] && return 0
    rm -rf "$MYSQL_DATA"
    mkdir -p "$MYSQL_DATA"
    echo "--- $(date '+%F %T') mariadb-install-db" >>"$MYSQL_LOG"
    if ! mariadb-install-db --no-defaults --datadir="$MYSQL_DATA" --user=root \
        --auth-root-authentication-method=normal --skip-test-db \
        "${MYSQL_TUNING[@]}" >>"$MYSQL_LOG" 2>&1; then
        fail_with_log mariadbd "$MYSQL_LOG" "mariadb-install-db failed for $MYSQL_DATA"
        return 1
    fi
    touch "$MYSQL_DATA/.sk-initialised"
}

# Small and fast rather than durable: a test box, not a database server. Commit flushes
# are per second (flush_log_at_trx_commit=2), and there's no doublewrite and no binlog. A SIGKILL
# of mariadbd alone still loses nothing committed, because the OS keeps the written log.
MYSQL_TUNING=(
    --innodb-buffer-pool-size=512M --innodb-log-file-size=256M --innodb-log-buffer-size=16M
    --innodb-flush-log-at-trx-commit=2 --innodb-doublewrite=0
    --key-buffer-size=8M --skip-log-bin
)

# mysql_launch PORT: returns 0 when it answers, 2 if the port was taken, 1 on any other failure.
mysql_launch() {
    local port=$1 pid
    echo "--- $(date '+%F %T') starting on port $port" >>"$MYSQL_LOG"
    spawn "$MYSQL_PID" "$MYSQL_LOG" mariadbd --no-defaults --user=root \
        --datadir="$MYSQL_DATA" --socket="$MYSQL_SOCK" --pid-file="$MYSQL_PID" \
        --log-error="$MYSQL_LOG" --bind-address=127.0.0.1 --port="$port" \
        --skip-name-resolve --max-connections=1000 \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
        "${MYSQL_TUNING[@]}"
    pid=$SPAWNED_PID
    local deadline=$((SECONDS + TIMEOUT)) # a wall-clock bound: a hung daemon makes each ping slow
    while [ "$SECONDS" -lt "$deadline" ]; do
        if mysql_ping; then
            echo "$port" >"$MYSQL_PORT_FILE"
            return 0
        fi
        if gone "$pid"; then
            grep -q 'Address already in use' <(tail -n 30 "$MYSQL_LOG") && return 2
            fail_with_log mariadbd "$MYSQL_LOG" "the process exited"
            return 1
        fi
        sleep 0.1
    done
    fail_with_log mariadbd "$MYSQL_LOG" "no answer on $MYSQL_SOCK within ${TIMEOUT}s"
    stop_pid mariadbd "$MYSQL_PID" mariadbd 1 >/dev/null
    return 1
}

# mysql_provision: the database and the application user (idempotent, so it runs on every
# start). Two hosts are needed because skip-name-resolve makes 'localhost' mean the socket only.
# PROCESS lets tests inspect SHOW PROCESSLIST for leaked connections.
mysql_provision() {
    local port=$1 host sql=""
    sql+="CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4;"
    for host in 127.0.0.1 localhost; do
        sql+="CREATE USER IF NOT EXISTS '$DB_USER'@'$host' IDENTIFIED BY '$DB_PASS';"
        sql+="GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'$host';"
        sql+="GRANT PROCESS ON *.* TO '$DB_USER'@'$host';"
    done
    if ! as_root "$sql" >>"$MYSQL_LOG" 2>&1; then
        fail_with_log mariadbd "$MYSQL_LOG" "could not create database/user as root on $MYSQL_SOCK"
        return 1
    fi
    # Check the exact path clients take: TCP, application user, application database.
    if ! mariadb --no-defaults -h127.0.0.1 -P"$port" -u"$DB_USER" -p"$DB_PASS" "$DB_NAME" \
        --connect-timeout=5 -e 'SELECT 1' >/dev/null 2>>"$MYSQL_LOG"; then
        fail_with_log mariadbd "$MYSQL_LOG" "user $DB_USER cannot log in over 127.0.0.1:$port"
        return 1
    fi
}

# ensure_mysql MODE: reuse a live mariadbd, or start one (MODE as for choose_port).
ensure_mysql() {
    local port tries rc
    if mysql_alive; then
        port=$(cat "$MYSQL_PORT_FILE")
        mysql_provision "$port" || return 1
        say "mariadbd already running (pid $(cat "$MYSQL_PID"), port $port)"
        return 0
    fi
    stop_pid mariadbd "$MYSQL_PID" mariadbd 1 >/dev/null
    mysql_init_datadir || return 1
    for ((tries = 0; tries < 5; tries++)); do
        port=$(choose_port "$MYSQL_PORT_FILE" "$1") || die "mariadbd: no recorded port in $MYSQL_PORT_FILE (run start first)"
        rc=0
        mysql_launch "$port" || rc=$?
        if [ $rc -eq 0 ]; then
            mysql_provision "$port" || {
                stop_pid mariadbd "$MYSQL_PID" mariadbd 0 >/dev/null
                return 1
            }
            say "mariadbd running (pid $(cat "$MYSQL_PID"), port $port, socket $MYSQL_SOCK)"
            return 0
        fi
        if [ $rc -eq 2 ] && [ "$1" = any ]; then
            rm -f "$MYSQL_PORT_FILE"
            continue
        fi
        [ $rc -eq 2 ] && fail_with_log mariadbd "$MYSQL_LOG" "port $port is taken by another process"
        return 1
    done
    fail_with_log mariadbd "$MYSQL_LOG" "no usable port after $tries tries"
    return 1
}

# ---------------------------------------------------------------- env file

# write_env: written to a temp file and renamed, so a concurrent reader never sources half a file.
# Each service's lines only once it has a port (the cluster is started on its own, by cluster-start).
write_env() {
    local rp mp cp
    {
        echo "# Written by tests/harness/services.sh; source it. Services in $dir"
        if [ -s "$REDIS_PORT_FILE" ]; then
            rp=$(cat "$REDIS_PORT_FILE")
            printf 'export %s=%q\n' SECKILLD_REDIS "redis://127.0.0.1:$rp/0" SK_REDIS_PORT "$rp"
        fi
        if [ -s "$MYSQL_PORT_FILE" ]; then
            mp=$(cat "$MYSQL_PORT_FILE")
            printf 'export %s=%q\n' SECKILLD_MYSQL "mysql://$DB_USER:$DB_PASS@127.0.0.1:$mp/$DB_NAME" SK_MYSQL_PORT "$mp" \
                SK_MYSQL_SOCKET "$MYSQL_SOCK"
        fi
        if [ -s "$(node_dir 1)/port" ] && cp=$(cluster_ports 2>/dev/null); then
            printf 'export %s=%q\n' SK_REDIS_CLUSTER_URL "redis+cluster://$(sed 's/^/127.0.0.1:/' <<<"$cp" | paste -sd,)" \
                SK_REDIS_CLUSTER_PORTS "$(paste -sd' ' <<<"$cp")"
        fi
        printf 'export %s=%q\n' SK_SERVICES_DIR "$dir" SK_SERVICES_SH "$HARNESS"
    } >"$ENV_FILE.tmp"
    mv -f "$ENV_FILE.tmp" "$ENV_FILE"
}

# ---------------------------------------------------------------- commands

# One invocation at a time per DIR (parallel test runs sharing DIR, or start racing stop).
lock() {
    mkdir -p "$dir"
    exec 9>"$dir/.lock"
    flock -w 300 9 || die "timed out waiting for the lock on $dir/.lock"
}

cmd_start() {
    lock
    ensure_redis any || die "start failed: redis-server did not come up (log: $REDIS_LOG)"
    if ! ensure_mysql any; then
        # Leave nothing behind from a failed start that this call began.
        [ $REDIS_STARTED = 1 ] && stop_pid redis-server "$REDIS_PID" redis-server 0 >/dev/null
        die "start failed: mariadbd did not come up (log: $MYSQL_LOG)"
    fi
    write_env
    say "env written to $ENV_FILE"
}

cmd_stop() {
    [ -d "$dir" ] || return 0
    lock
    stop_pid redis-server "$REDIS_PID" redis-server 0
    stop_pid mariadbd "$MYSQL_PID" mariadbd 0
    [ -d "$CLUSTER_DIR" ] && cluster_stop_all 0
    # clusters that tests started in dirs of their own below DIR (a killed test leaves them running)
    local sub
    for sub in "$dir"/*/cluster/replicas; do
        [ -f "$sub" ] && bash "$HARNESS" cluster-stop "${sub%/cluster/replicas}"
    done
    return 0
}

cmd_status() {
    local ok=0 pid
    if [ -d "$dir" ] && pid=$(pid_of "$REDIS_PID" redis-server); then
        if redis_alive; then
            echo "redis-server: running, pid $pid, port $(cat "$REDIS_PORT_FILE")"
        else
            echo "redis-server: NOT ANSWERING, pid $pid"
            ok=1
        fi
    else
        echo "redis-server: stopped"
        ok=1
    fi
    if [ -d "$dir" ] && pid=$(pid_of "$MYSQL_PID" mariadbd); then
        if mysql_alive; then
            echo "mariadbd: running, pid $pid, port $(cat "$MYSQL_PORT_FILE"), socket $MYSQL_SOCK"
        else
            echo "mariadbd: NOT ANSWERING, pid $pid"
            ok=1
        fi
    else
        echo "mariadbd: stopped"
        ok=1
    fi
    [ -f "$ENV_FILE" ] && echo "env: $ENV_FILE"
    return $ok
}

case $cmd in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
redis-stop)
    [ -d "$dir" ] || exit 0
    lock
    stop_pid redis-server "$REDIS_PID" redis-server 1
    ;;
mysql-stop)
    [ -d "$dir" ] || exit 0
    lock
    stop_pid mariadbd "$MYSQL_PID" mariadbd 1
    ;;
redis-start)
    lock
    ensure_redis same || die "redis-start failed: redis-server did not come up (log: $REDIS_LOG)"
    [ -s "$MYSQL_PORT_FILE" ] && write_env
    ;;
mysql-start)
    lock
    ensure_mysql same || die "mysql-start failed: mariadbd did not come up (log: $MYSQL_LOG)"
    [ -s "$REDIS_PORT_FILE" ] && write_env
    ;;
cluster-start) cmd_cluster_start ;;
cluster-stop)
    [ -d "$CLUSTER_DIR" ] || exit 0
    lock
    cluster_stop_all 0
    ;;
cluster-node-stop | cluster-node-start)
    [ $# -eq 3 ] && [ "$3" -ge 1 ] 2>/dev/null && [ "$3" -le $CLUSTER_NODES ] || usage
    lock
    if [ "$cmd" = cluster-node-stop ]; then
        stop_pid "cluster node $3" "$(node_dir "$3")/redis.pid" redis-server 1
    else
        ensure_cluster_node "$3" same || die "cluster-node-start failed: node $3 did not come up"
        say "cluster node $3 running (port $(cat "$(node_dir "$3")/port"))"
    fi
    ;;
*) usage ;;
esac
exit 0
