#!/usr/bin/env bash
# tests/harness/run.sh: `make run`. Starts private redis-server and mariadbd, then runs seckilld
# in the foreground against them with the embedded Kafka mock. Ctrl-C stops seckilld
# (gracefully: it handles SIGINT) and then both services.
#
# Environment: BUILD (default build), SVC (default $BUILD/services), SECKILLD_CONF (default
# conf/seckilld.conf). Anything SECKILLD_* you set yourself is kept, except SECKILLD_REDIS and
# SECKILLD_MYSQL, which point at the private services.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BUILD=${BUILD:-build}
SVC=${SVC:-$BUILD/services}
CONF=${SECKILLD_CONF:-conf/seckilld.conf}
BIN=$BUILD/seckilld
services=tests/harness/services.sh

[ -x "$BIN" ] || {
    echo "run.sh: $BIN not found; run 'make build' first" >&2
    exit 1
}

# The services run in their own sessions, so Ctrl-C reaches only seckilld (same process group
# as us). Bash runs the INT trap once seckilld has exited, so we never stop Redis or MariaDB
# under a server that is still draining.
# shellcheck disable=SC2317 # reached through the traps
cleanup() {
    trap - EXIT INT TERM
    echo
    bash "$services" stop "$SVC" || true
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

bash "$services" start "$SVC"
# shellcheck source=/dev/null
. "$SVC/env"
export SECKILLD_LISTEN=${SECKILLD_LISTEN:-127.0.0.1:8080}
export SECKILLD_KAFKA=${SECKILLD_KAFKA:-embedded}

# The examples use localhost when we listen on loopback or on all addresses.
port=${SECKILLD_LISTEN##*:}
host=${SECKILLD_LISTEN%:*}
case $host in 127.0.0.1 | 0.0.0.0 | localhost | '' | '[::]' | '[::1]') url=localhost:$port ;; *) url=$SECKILLD_LISTEN ;; esac
token=${SECKILLD_ADMIN_TOKEN:-change-me}

cat <<EOF

seckilld on http://$SECKILLD_LISTEN  (redis $SECKILLD_REDIS, mysql 127.0.0.1:$SK_MYSQL_PORT, kafka $SECKILLD_KAFKA)
Try, from another terminal (the demo item comes from conf/seckilld.conf):
  curl -s $url/healthz
  curl -s -XPOST $url/seckill/add -d '{"item_id":"demo","user_id":"alice"}'
  id=\$(curl -s -XPOST $url/seckill/add -d "{\\"item_id\\":\\"demo\\",\\"user_id\\":\\"u\$RANDOM\\"}" | sed -n 's/.*"order_id":"\\([^"]*\\)".*/\\1/p'); curl -s $url/order/\$id
  curl -s -H 'Authorization: Bearer $token' $url/admin/items/demo
  curl -s -XPUT -H 'Authorization: Bearer $token' $url/admin/items/demo -d '{"stock":100,"limit_per_user":1}'   # re-arm
  mariadb -h127.0.0.1 -P$SK_MYSQL_PORT -useckill -pseckill seckill     # the orders table
  redis-cli -p $SK_REDIS_PORT                                          # the stock keys
Ctrl-C stops seckilld, Redis and MariaDB.

EOF

# Foreground, not exec: the traps above must run after it exits.
rc=0
"$BIN" -c "$CONF" || rc=$?
exit "$rc"
