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
    # libraries we link
    liblua5.4-dev libh2o-evloop-dev libhiredis-dev librdkafka-dev libmariadb-dev lua-cjson-dev
    # h2o.h includes <openssl/ssl.h>, but libh2o-evloop-dev does not depend on libssl-dev
    # (today it only arrives through libmariadb-dev); name it so the build never hinges on that.
    # We also link its libcrypto ourselves (bindings/base/crypto.c: HMAC-SHA-256 for purchase tokens).
    libssl-dev
    # servers and clients for make run / make test / make bench
    redis-server redis-tools mariadb-server mariadb-client kcat wrk curl
    # make deb (CPack's DEB generator: dpkg-shlibdeps fills Depends); promtool for the alert rules' tests
    dpkg-dev prometheus
    # used by the scripts themselves (port probing, process control, ss)
    python3 procps iproute2
)

# One dpkg-query for all packages; unknown packages print nothing (and an error we discard).
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null || true)
missing=()
for p in "${packages[@]}"; do
    grep -qxF "$p install ok installed" <<<"$installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "deps/install.sh: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
        echo "deps/install.sh: not root and no sudo; install as root: ${missing[*]}" >&2
        exit 1
    }
    sudo=(sudo -n) # -n: never prompt; CI has no stdin
fi
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
