#!/usr/bin/env bash
# tests/bench/scale/bundle.sh: a self-contained bundle for the many-core scaling run (scale.sh beside this file).
# It is ../shared/tools/bundle.sh's bundle (seckilld, redis-server, redis-benchmark, wrk, their libraries and
# loader, the scripts) plus what the sale needs since items are set up through the books: mariadbd with its
# message files and a small datadir made here (database and user already created), the mariadb client
# (a fresh database per run) and redis-cli for INFO commandstats. The larger machine needs nothing installed.
# usage (from the project root, after `make build`): bash tests/bench/scale/bundle.sh [BUILD_DIR] [DEST]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-build}
DEST=${2:-$BUILD/scale-bundle}
SHARED_TOOLS=${SHARED_TOOLS:-$HERE/../../../../shared/tools}
bash "$SHARED_TOOLS/bundle.sh" "$BUILD" "$DEST" >/dev/null
cp "$SHARED_TOOLS/buy.lua" "$DEST/"
cp conf/schema.sql "$DEST/"
cp "$HERE/scale.sh" "$DEST/scale.sh" # ours: the shared one predates the books (it sets items up without MySQL)

cp "$(command -v mariadbd)" "$(command -v mariadb)" "$(command -v redis-cli)" "$DEST/bin/"
for f in "$DEST/bin/mariadbd" "$DEST/bin/mariadb" "$DEST/bin/redis-cli"; do ldd "$f" | awk '/=>/ {print $3}'; done | sort -u |
    xargs -I{} cp -Ln {} "$DEST/lib/"
if [ -n "${PERF:-}" ]; then # perf too, for scale.sh's PERF=1 (about 25 MB more)
    cp "$(command -v perf)" "$DEST/bin/"
    ldd "$DEST/bin/perf" | awk '/=>/ {print $3}' | sort -u | xargs -I{} cp -Ln {} "$DEST/lib/"
fi
mkdir -p "$DEST/share"
cp -r /usr/share/mysql/english /usr/share/mysql/charsets "$DEST/share/"

# The datadir: made and provisioned here with a throw-away mariadbd on a socket, shut down cleanly, packed.
work=$(mktemp -d)
trap 'kill "$(cat "$work/pid" 2>/dev/null)" 2>/dev/null; rm -rf "$work"' EXIT
opts=(--no-defaults --user=root --datadir="$work/data" --innodb-log-file-size=16M --innodb-buffer-pool-size=64M)
mariadb-install-db "${opts[@]}" --auth-root-authentication-method=normal --skip-test-db >"$work/log" 2>&1
mariadbd "${opts[@]}" --skip-networking --socket="$work/sock" --pid-file="$work/pid" --log-error="$work/err" &
for _ in $(seq 1 100); do mariadb-admin --no-defaults -uroot --socket="$work/sock" ping >/dev/null 2>&1 && break; sleep 0.2; done
sql="CREATE DATABASE seckill CHARACTER SET utf8mb4;"
for host in 127.0.0.1 localhost; do
    sql+="CREATE USER 'seckill'@'$host' IDENTIFIED BY 'seckill'; GRANT ALL PRIVILEGES ON seckill.* TO 'seckill'@'$host';"
done
mariadb --no-defaults -uroot --socket="$work/sock" -e "$sql"
mariadb-admin --no-defaults -uroot --socket="$work/sock" shutdown
wait
tar -C "$work" -czf "$DEST/mysql-data.tar.gz" data
echo "bundle in $DEST ($(du -sh "$DEST" | cut -f1)); on the other machine: bash $DEST/scale.sh (carry $DEST)"
