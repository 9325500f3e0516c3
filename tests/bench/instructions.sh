#!/usr/bin/env bash
# Issue 24's second ruler: the instructions seckilld executes for one answer, rung by rung, counted by valgrind's
# callgrind. Unlike CPU time on a shared 2-core machine (±20 % between runs) the count moves by a few per cent at
# most, so a change that makes a layer dearer shows here first. Counted: everything a worker does inside h2o's call of
# its request handler (core/http.c on_req), which for these answers is the whole answer: the request object, the
# handler's coroutine, its Lua, the JSON encoding and handing the response to h2o. Not counted: h2o's parsing before
# it and the kernel's writes after it (the ladder's CPU time has those). Only answers that need no backend are rungs:
# a handler that waits for Redis ends outside on_req.
#   c_hello     GET /_c/hello, the C-only twin of a Lua route (bench routes on): h2o and the core's own handling
#   healthz     GET /healthz (renders the health document, counted in /metrics)
#   lua_route   GET /time: entering Lua, before any of the application's work
#   unknown     a buy of a made-up item id, a new one per request                                 404
#   sold_out    a buy of an item set up with stock 0 (one buy first, so the process has marked it)  409
#   limited     a buy of an item whose own max_rps is 0.001 (its one token spent)                 429
#   bad_token   a buy of a require_token item with a forged token                                  403
#   malformed   a JSON body cut short                                                              400
# One worker, the shipped scripts and config, the private services of run.sh; BENCH_INSTR_N answers per rung (default
# 4000) after 300 uncounted ones, one keep-alive connection. Every answer's status is checked.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. tests/bench/lib.sh

n=${BENCH_INSTR_N:-4000}
token=bench-token
secret=bench-secret-0123456789abcdef
if ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then
    echo "(bench part instructions: valgrind is not installed; deps/install.sh installs it)"
    exit 0
fi
out=$(mktemp -d)
trap 'kill "$vg" 2>/dev/null || true; rm -rf "$out"' EXIT

SK_PORT=$(free_port)
env SECKILLD_LISTEN=127.0.0.1:$SK_PORT SECKILLD_WORKERS=1 SECKILLD_SCRIPTS=scripts SECKILLD_KAFKA=embedded \
    SECKILLD_BENCH_ROUTES=1 SECKILLD_LOG_LEVEL=warn SECKILLD_ADMIN_TOKEN=$token SECKILLD_TOKEN_SECRET=$secret \
    valgrind --tool=callgrind --instr-atstart=no --toggle-collect=on_req --callgrind-out-file="$out/cg.out" \
    "${BUILD:-build}/seckilld" -c conf/seckilld.conf >"$out/log" 2>&1 &
vg=$!
for _ in $(seq 1 600); do
    curl -s -o /dev/null "http://127.0.0.1:$SK_PORT/healthz" && break
    sleep 0.2
done
curl -s -o /dev/null "http://127.0.0.1:$SK_PORT/healthz" || { echo "bench: seckilld under valgrind did not start" >&2; tail "$out/log" >&2; exit 1; }

setup_item() { # ITEM BODY
    curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $token" \
        "http://127.0.0.1:$SK_PORT/admin/items/$1" -d "$2"
}
run=i$$
so=so-$run lim=lim-$run tok=tok-$run
for spec in "$so"'|{"stock": 0}' "$lim"'|{"stock": 0, "max_rps": 0.001}' "$tok"'|{"stock": 1000000000, "require_token": true}'; do
    [ "$(setup_item "${spec%%|*}" "${spec#*|}")" = 200 ] || { echo "bench: item set-up failed" >&2; exit 1; }
done

# requests RUNG COUNT TAG: COUNT requests of the rung on one keep-alive connection; prints "<answers> <unexpected>"
requests() {
    python3 - "$SK_PORT" "$1" "$2" "$3" "$so" "$lim" "$tok" <<'EOF'
import http.client, sys, time
port, rung, count, tag, so, lim, tok = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], *sys.argv[5:]
forged = "v1.%d.%s" % ((int(time.time()) + 3600) * 1000, "0123456789abcdef" * 4)
json = {"Content-Type": "application/json"}
def buy(item, i, extra=""):
    return "POST", "/seckill/add", '{"item_id":"%s","user_id":"%s-%d"%s}' % (item, tag, i, extra)
make = {
    "c_hello": (lambda i: ("GET", "/_c/hello", None), 200),
    "healthz": (lambda i: ("GET", "/healthz", None), 200),
    "lua_route": (lambda i: ("GET", "/time", None), 200),
    "unknown": (lambda i: buy("x%s%d" % (tag, i), i), 404),
    "sold_out": (lambda i: buy(so, i), 409),
    "limited": (lambda i: buy(lim, i), 429),
    "bad_token": (lambda i: buy(tok, i, ',"token":"%s"' % forged), 403),
    "malformed": (lambda i: ("POST", "/seckill/add", '{"item_id":"%s","user_id":' % so), 400),
}
fn, expect = make[rung]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
bad = 0
for i in range(count):
    method, path, body = fn(i)
    c.request(method, path, body=body, headers=json if body is not None else {})
    r = c.getresponse()
    r.read()
    bad += r.status != expect
print(count, bad)
EOF
}

# the sold-out mark and the limited item's one token
requests sold_out 1 first >/dev/null
requests limited 1 first >/dev/null

rungs=(c_hello healthz lua_route unknown sold_out limited bad_token malformed)
declare -A per
printf '\n== instructions: what seckilld executes for one answer (callgrind, inside on_req, %s answers a rung, 1 worker)\n' "$n"
printf '%-10s %14s %10s %10s\n' rung instructions x_c_hello x_healthz
for rung in "${rungs[@]}"; do
    requests "$rung" 300 "w$rung" >/dev/null # warm: caches filled, the item lists read
    callgrind_control -i on "$vg" >/dev/null 2>&1
    read -r total bad < <(requests "$rung" "$n" "$rung")
    callgrind_control -i off "$vg" >/dev/null 2>&1
    rm -f "$out"/cg.out.*
    callgrind_control -d "$vg" >/dev/null 2>&1
    dump=$(ls "$out"/cg.out.* 2>/dev/null | tail -1)
    ir=$(awk '/^totals:/ { print $2; exit }' "$dump" 2>/dev/null)
    ir=${ir:-0}
    per[$rung]=$(awk -v t="$ir" -v n="${total:-0}" 'BEGIN { if (n > 0) printf "%.0f", t / n; else print 0 }')
    flag=""
    [ "$bad" = 0 ] || flag=" ! $bad of $total answers had another status"
    printf '%-10s %14s %10s %10s%s\n' "$rung" "${per[$rung]}" \
        "$(awk -v a="${per[$rung]}" -v b="${per[c_hello]}" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "-" }')" \
        "$(awk -v a="${per[$rung]}" -v b="${per[healthz]:-0}" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "-" }')" "$flag"
done
echo "   (the Lua VM's collector runs in steps charged to whichever answer allocates: a rung's count moves by a few per cent between runs)"
