#!/usr/bin/env bash
# deps/install.sh: put seckilld's build, test and run dependencies on a Debian 12 machine.
#
# Idempotent and cheap: one dpkg-query call decides what is missing, and apt-get
# (update + install) runs only when something is. `make build` calls this every time, so
# the "nothing to do" path must stay well under a second and must not need the network.
#
# Installing mariadb-server / redis-server may start the distribution's own services on
# 3306 / 6379 (or not, where policy-rc.d forbids it, as in containers). We never use them:
# tests/harness/services.sh starts private instances on free ports.
set -euo pipefail

packages=(
    # build
    build-essential cmake pkg-config clang-format
    # the fuzz targets (tests/fuzz, make fuzz): clang 14 and its libFuzzer
    clang libfuzzer-14-dev
    # libraries we link
    liblua5.4-dev libh2o-evloop-dev libhiredis-dev librdkafka-dev libmariadb-dev lua-cjson-dev
    # seckilld's malloc (CMakeLists.txt, SK_JEMALLOC)
    libjemalloc-dev
    # h2o.h includes <openssl/ssl.h>, but libh2o-evloop-dev does not depend on libssl-dev
    # (today it only arrives through libmariadb-dev); name it so the build never hinges on that.
    # We also link its libcrypto ourselves (bindings/base/crypto.c: HMAC-SHA-256 for purchase tokens).
    libssl-dev
    # servers and clients for make run / make test / make bench
    redis-server redis-tools mariadb-server mariadb-client kcat wrk curl
    # make bench part instructions: callgrind counts what one answer executes
    valgrind
    # make deb (CPack's DEB generator: dpkg-shlibdeps fills Depends); promtool for the alert rules' tests
    dpkg-dev prometheus
    # used by the scripts themselves (port probing, process control, ss)
    python3 procps iproute2
    # the dashboard's charts (served from /usr/share/javascript/chart.js by GET /dashboard/chart.js); headless
    # Chromium and a font for tests/e2e/96_docs.py's browser test; jsonschema to check real answers against the
    # OpenAPI document; node for the npm packages below; a websocket client to drive Chromium over the DevTools
    # protocol (96_docs.py's waiting-room page test clicks its buttons)
    libjs-chart.js chromium fonts-dejavu-core python3-jsonschema nodejs python3-websocket
)

# One dpkg-query for all packages; unknown packages print nothing (and an error we discard).
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null || true)
missing=()
for p in "${packages[@]}"; do
    grep -qxF "$p install ok installed" <<<"$installed" || missing+=("$p")
done

# npm ships inside some nodejs builds (NodeSource's) and conflicts with Debian's npm package there
command -v npm >/dev/null || missing+=(npm)

# npm packages that Debian does not package: Swagger UI's distribution (served at /api-docs) and an OpenAPI 3.1
# validator (tests/e2e/96_docs.py). deps/npm/package.json names exact versions and its package-lock.json pins every
# package by integrity hash; `npm ci` installs exactly that into NPM_DIR, outside the tree, so the server and the
# tests work offline afterwards. Skipped when NPM_DIR already holds this lock file. --ignore-scripts: swagger-ui-dist
# pulls in @scarf/scarf, whose install script only reports the download.
npm_src="$(cd "$(dirname "$0")" && pwd)/npm"
npm_dir=${SECKILLD_NPM_DIR:-/opt/seckilld/npm}
npm_needed=0
cmp -s "$npm_src/package-lock.json" "$npm_dir/package-lock.json" 2>/dev/null || npm_needed=1

if [ ${#missing[@]} -eq 0 ] && [ $npm_needed -eq 0 ]; then
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
        echo "deps/install.sh: not root and no sudo; install as root: ${missing[*]} (and npm packages into $npm_dir)" >&2
        exit 1
    }
    sudo=(sudo -n) # -n: never prompt; CI has no stdin
fi
if [ ${#missing[@]} -ne 0 ]; then
    echo "deps/install.sh: installing ${missing[*]}"
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    # Debian's prometheus package starts its own server on :9090 where systemd runs; we only want promtool
    if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
        "${sudo[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi
if [ $npm_needed -ne 0 ]; then
    echo "deps/install.sh: installing npm packages (deps/npm/package-lock.json) into $npm_dir"
    "${sudo[@]}" mkdir -p "$npm_dir"
    "${sudo[@]}" cp "$npm_src/package.json" "$npm_src/package-lock.json" "$npm_dir/"
    (cd "$npm_dir" && "${sudo[@]}" env SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund)
fi
