# tests/bench/lib.sh: helpers shared by the benchmark parts (sourced, not run).
# Every figure comes from wrk (or the backend's own benchmark tool) against the real server on loopback,
# and every table prints our figure beside its baseline measured in the same run.

BENCH_SECONDS=${BENCH_SECONDS:-5}
BENCH_THREADS=${BENCH_THREADS:-2}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_seckilld SCRIPTS WORKERS [VAR=VALUE ...]: starts build/seckilld in the background on a free port;
# sets SK_PID and SK_PORT and waits until it answers.
start_seckilld() {
    local scripts=$1 workers=$2
    shift 2
    SK_PORT=$(free_port)
    env SECKILLD_LISTEN=127.0.0.1:$SK_PORT SECKILLD_WORKERS="$workers" SECKILLD_SCRIPTS="$scripts" \
        SECKILLD_KAFKA=${SECKILLD_KAFKA:-embedded} SECKILLD_BENCH_ROUTES=1 SECKILLD_LOG_LEVEL=warn "$@" \
        "${BUILD:-build}/seckilld" -c "${BENCH_CONF:-conf/seckilld.conf}" >"${BENCH_LOG:-/dev/null}" 2>&1 &
    SK_PID=$!
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "http://127.0.0.1:$SK_PORT/healthz" && return 0
        sleep 0.05
    done
    echo "bench: seckilld did not start" >&2
    return 1
}

stop_seckilld() {
    kill -TERM "$SK_PID" 2>/dev/null || true
    wait "$SK_PID" 2>/dev/null || true
}

# wrk_run URL CONNECTIONS [wrk args...]: prints "req/s p50 p99" (latencies in ms)
wrk_run() {
    local url=$1 conns=$2
    shift 2
    local threads=$BENCH_THREADS
    [ "$conns" -lt "$threads" ] && threads=$conns
    wrk -t"$threads" -c"$conns" -d"${BENCH_SECONDS}s" --latency "$@" "$url" 2>&1 | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec:/ { rps = $2 }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { non2xx = $5 }
        END { printf "%.0f %.2f %.2f %d\n", rps, p50, p99, non2xx }'
}

# cpu_ticks PID (or PID/task/TID): user+system CPU time of a process (or one thread) so far, in clock ticks
# (/proc/PID/stat fields 14 and 15)
cpu_ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# cpu_by_thread PID: the process's CPU ticks so far by what its threads do, as "workers consumer clients mock other":
# the core's workers (sk:worker-N) and Kafka consumer (sk:consumer), librdkafka's client threads (rdk:main,
# rdk:broker*), the embedded mock broker's (rdk:mock), and the rest (the main thread, pollers, tasks). A thread
# that ended meanwhile is not counted.
cpu_by_thread() {
    local t
    for t in /proc/"$1"/task/*; do
        printf '%s ' "$(cat "$t/comm" 2>/dev/null)"
        cpu_ticks "$1/task/${t##*/}" 2>/dev/null || echo 0
    done | awk '{ g = "other" }
        $1 ~ /^sk:worker/ { g = "workers" } $1 == "sk:consumer" { g = "consumer" }
        $1 ~ /^rdk:(main|broker)/ { g = "clients" } $1 == "rdk:mock" { g = "mock" }
        { t[g] += $2 } END { print t["workers"] + 0, t["consumer"] + 0, t["clients"] + 0, t["mock"] + 0, t["other"] + 0 }'
}

# redis_calls: commands the harness's redis-server has executed so far (INFO commandstats, every command)
redis_calls() {
    redis-cli -p "$SK_REDIS_PORT" INFO commandstats | tr -d '\r' | awk -F'[=,:]' '/^cmdstat_/ { s += $3 } END { print s + 0 }'
}

# us_per TICKS COUNT: microseconds of CPU per item
us_per() {
    awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "-" }'
}

# wait_for SECONDS WHAT CMD...: polls CMD (every 50 ms) until it succeeds; after SECONDS says so and returns 1
wait_for() {
    local limit=$1 what=$2 deadline
    shift 2
    deadline=$(($(date +%s) + limit))
    until "$@"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "   (gave up after ${limit}s waiting for $what)" >&2
            return 1
        fi
        sleep 0.05
    done
}
