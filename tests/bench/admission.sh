#!/usr/bin/env bash
# Issue 12's benchmark: what admission costs, in one run on this machine (strategy watch, 256 connections).
#   off              the shipped config, no limits, no tokens: a distinct user per buy (the baseline)
#   limits+tokens    per-IP, per-user and per-item buckets on (never tripped: the point is their cost), and the
#                    item requires a purchase token (pre-minted per user, checked by HMAC-SHA256 on every buy)
#   idempotency      every buy carries a distinct Idempotency-Key (one more Redis round trip per buy)
# then a flood of one user over its limit (every answer 429, refused before any Redis work) beside the sold-out
# path (every answer 409 from the process-wide mark, also without Redis).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. tests/bench/lib.sh

token=bench-token
secret=bench-secret-0123456789abcdef
conns=256
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# the shipped config plus admission: limits wide enough never to refuse a buyer of the throughput runs
conf=$work/admission.conf
python3 - "$conf" "$secret" <<'PY'
import sys
text = open("conf/seckilld.conf").read()
at = text.rstrip().rfind("}")
extra = '''    token_secret = "%s",
    limits = { ip = { rate = 1000000, burst = 1000000 }, user = { rate = 5, burst = 5 },
               item = { rate = 1000000, burst = 1000000 } },
''' % sys.argv[2]
open(sys.argv[1], "w").write(text[:at] + extra + "}\n")
PY

setup_item() { # ITEM BODY
    curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $token" \
        "http://127.0.0.1:$SK_PORT/admin/items/$1" -d "$2"
}
ms() { awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
            $1 == "'"$1"'" { printf "%.2f", ms($2) }'; }

# run NAME ITEM WRK-ARGS...: one wrk run with CPU per accepted buy
run() {
    local name=$1 item=$2
    shift 2
    local sk0 sk1 out ok rps
    sk0=$(cpu_ticks "$SK_PID")
    out=$(ITEM=$item wrk -t"$BENCH_THREADS" -c"$conns" -d"${BENCH_SECONDS}s" --latency "$@" "http://127.0.0.1:$SK_PORT" 2>&1)
    sk1=$(cpu_ticks "$SK_PID")
    ok=$(awk '/^COUNTS/ { print $2 }' <<<"$out")
    rps=$(awk -v ok="$ok" -v s="$BENCH_SECONDS" 'BEGIN { printf "%.0f", ok / s }')
    printf '%-16s %10s %8s %8s %8s\n' "$name" "$rps" "$(ms 50% <<<"$out")" "$(ms 99% <<<"$out")" \
        "$(us_per $((sk1 - sk0)) "$ok")"
}

printf '\n== admission: its cost per buy (watch, %s connections, wrk %ss runs)\n' "$conns" "$BENCH_SECONDS"
printf '%-16s %10s %8s %8s %8s\n' mode buys/s p50_ms p99_ms sk_us

start_seckilld scripts "$(nproc)" SECKILLD_ADMIN_TOKEN=$token
item=adm-off-$$
[ "$(setup_item "$item" '{"stock": 1000000000}')" = 200 ] || { echo "bench: item set-up failed" >&2; exit 1; }
run off "$item" -s tests/bench/buy.lua
item=adm-idem-$$
[ "$(setup_item "$item" '{"stock": 1000000000}')" = 200 ] || { echo "bench: item set-up failed" >&2; exit 1; }
IDEMPOTENT=1 RUN=i$$ run idempotency "$item" -s tests/bench/buy.lua
stop_seckilld

BENCH_CONF=$conf start_seckilld scripts "$(nproc)" SECKILLD_ADMIN_TOKEN=$token
item=adm-on-$$
[ "$(setup_item "$item" '{"stock": 1000000000, "require_token": true, "token_ttl_ms": 3600000}')" = 200 ] ||
    { echo "bench: item set-up failed" >&2; exit 1; }
# enough tokens that no user buys twice in the run (a repeat would be a 409, not a buy)
python3 - "$work/tokens" "$secret" "$item" 400000 <<'PY'
import hashlib, hmac, sys, time
path, secret, item, n = sys.argv[1], sys.argv[2].encode(), sys.argv[3], int(sys.argv[4])
exp = int(time.time() * 1000) + 3600000
with open(path, "w") as f:
    for i in range(n):
        user = "t%d" % i
        mac = hmac.new(secret, ("v1|%s|%s|%d" % (item, user, exp)).encode(), hashlib.sha256).hexdigest()
        f.write("%s v1.%d.%s\n" % (user, exp, mac))
PY
TOKENS=$work/tokens THREADS=$BENCH_THREADS run limits+tokens "$item" -s tests/bench/buy_token.lua

# a flood over the user limit: every answer 429 before any Redis work
read -r fl_rps fl_p50 fl_p99 _ < <(ITEM=$item wrk_run "http://127.0.0.1:$SK_PORT/seckill/add" "$conns" -s tests/bench/flood.lua)
refused=$(curl -s "http://127.0.0.1:$SK_PORT/metrics" | awk '/^seckilld_admission_refused_total\{limit="user"\}/ { print $2 }')
stop_seckilld

# the sold-out path in the same run, for comparison (every answer 409 from the process-wide mark)
start_seckilld scripts "$(nproc)" SECKILLD_ADMIN_TOKEN=$token
item=adm-so-$$
[ "$(setup_item "$item" '{"stock": 0}')" = 200 ] || { echo "bench: item set-up failed" >&2; exit 1; }
curl -s -o /dev/null -X POST "http://127.0.0.1:$SK_PORT/seckill/add" -d "{\"item_id\":\"$item\",\"user_id\":\"first\"}"
read -r so_rps so_p50 so_p99 _ < <(ITEM=$item wrk_run "http://127.0.0.1:$SK_PORT/seckill/add" "$conns" -s tests/bench/soldout.lua)
stop_seckilld
printf 'over-limit flood (one user, %s connections): %s refusals/s (429), p50 %s ms, p99 %s ms (%s refused in all)\n' \
    "$conns" "$fl_rps" "$fl_p50" "$fl_p99" "${refused:-?}"
printf 'sold-out path, same run:                     %s answers/s (409), p50 %s ms, p99 %s ms\n' \
    "$so_rps" "$so_p50" "$so_p99"
