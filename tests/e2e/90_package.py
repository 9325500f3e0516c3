"""Packaging (issue 14): --version and --help, `make install`'s layout (cmake --install with DESTDIR), the .deb
(cpack, read back with dpkg-deb), and the installed binary serving a buy with the installed config and scripts."""
import os
import re
import shutil
import subprocess
import tempfile
import uuid

import lib

with open(os.path.join(lib.ROOT, "CMakeLists.txt")) as f:
    VERSION = re.search(r"project\(seckilld VERSION (\S+)", f.read()).group(1)


def sanitized_build():
    with open(os.path.join(lib.BUILD, "CMakeCache.txt")) as f:
        return re.search(r"^SK_SANITIZE:BOOL=(ON|1|TRUE)$", f.read(), re.M) is not None


def install(prefix, destdir=None):
    env = dict(os.environ)
    env.pop("DESTDIR", None)
    if destdir:
        env["DESTDIR"] = destdir
    r = subprocess.run(["cmake", "--install", lib.BUILD, "--prefix", prefix], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def read(path):
    with open(path) as f:
        return f.read()


def test_version_and_help():
    r = subprocess.run([lib.BINARY, "--version"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout == "seckilld %s\n" % VERSION, r
    r = subprocess.run([lib.BINARY, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r
    for opt in ("-c FILE", "-t", "--role", "--redrive-dlq", "--kafka-mock", "--version", "--help"):
        assert opt in r.stdout, (opt, r.stdout)
    # every variable of README's table of settings (the rows', tests/unit/core/config_check.c), with its key
    names = re.findall(r"^\| `([a-z_.]+)` \|[^|]*\|[^|]*\| `(SECKILLD_[A-Z_]+)` \|", read(os.path.join(lib.ROOT, "README.md")), re.M)
    assert len(names) >= 15, names
    for key, env in names:
        assert re.search(r"^  %s +%s\b" % (env, re.escape(key)), r.stdout, re.M), (env, key, r.stdout)


def test_install_layout_with_destdir():
    root = tempfile.mkdtemp(prefix="sk-destdir-")
    try:
        install("/usr", destdir=root)
        for p in ("usr/bin/seckilld", "etc/seckilld/seckilld.conf", "usr/lib/systemd/system/seckilld.service",
                  "usr/share/seckilld/schema.sql", "usr/share/seckilld/scripts/app.lua",
                  "usr/share/seckilld/scripts/redis/take_batch.lua"):
            assert os.path.isfile(os.path.join(root, p)), p
        assert os.access(os.path.join(root, "usr/bin/seckilld"), os.X_OK)
        conf = read(os.path.join(root, "etc/seckilld/seckilld.conf"))
        assert 'scripts = "/usr/share/seckilld/scripts",' in conf, conf
        assert 'schema = "/usr/share/seckilld/schema.sql",' in conf, conf
        unit = read(os.path.join(root, "usr/lib/systemd/system/seckilld.service"))
        for line in ("ExecStart=/usr/bin/seckilld -c /etc/seckilld/seckilld.conf", "ExecReload=/bin/kill -HUP $MAINPID",
                     "Environment=SECKILLD_SCRIPTS=/usr/share/seckilld/scripts", "DynamicUser=yes",
                     "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes"):
            assert re.search("^%s$" % re.escape(line), unit, re.M), (line, unit)
        assert "@" not in re.sub(r"@system-service", "", unit), unit  # every @VAR@ substituted
    finally:
        shutil.rmtree(root)


def test_deb_control_and_contents():
    if sanitized_build():
        print("skip cpack: %s is the ASan build; its binary needs libasan, so the .deb is built and checked from "
              "the normal build only (install and run are still tested here)" % lib.BUILD)
        return
    out = tempfile.mkdtemp(prefix="sk-deb-")
    try:
        r = subprocess.run(["cpack", "-G", "DEB", "--config", os.path.join(lib.BUILD, "CPackConfig.cmake"), "-B", out],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        debs = [f for f in os.listdir(out) if f.endswith(".deb")]
        assert len(debs) == 1, os.listdir(out)
        deb = os.path.join(out, debs[0])
        field = lambda name: subprocess.run(["dpkg-deb", "-f", deb, name], capture_output=True, text=True,
                                            check=True).stdout.strip()
        assert field("Package") == "seckilld" and field("Version") == VERSION, (field("Package"), field("Version"))
        depends = [d.split()[0] for d in field("Depends").split(", ")]
        # every library the binary links directly is provided by a package the .deb depends on
        needed = re.findall(r"NEEDED\s+(\S+)", subprocess.run(["objdump", "-p", lib.BINARY], capture_output=True,
                                                               text=True, check=True).stdout)
        ldcache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
        for so in needed:
            m = re.search(r"^\s+%s \(libc6,x86-64\) => (\S+)$" % re.escape(so), ldcache, re.M)
            assert m, "%s not in the linker cache" % so
            path = os.path.realpath(m.group(1))
            owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
            if owner.returncode != 0:  # merged /usr: dpkg may know the /lib path
                owner = subprocess.run(["dpkg", "-S", path.replace("/usr/lib/", "/lib/", 1)], capture_output=True,
                                       text=True)
            assert owner.returncode == 0, (so, path, owner.stderr)
            pkg = owner.stdout.split(":")[0]
            assert pkg in depends, "%s (%s, from %s) missing in Depends: %s" % (so, path, pkg, depends)
        for pkg in ("libh2o-evloop0.13", "liblua5.4-0", "lua-cjson", "libhiredis0.14", "librdkafka1", "libmariadb3"):
            assert pkg in depends, (pkg, depends)
        listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True).stdout
        for p in ("./usr/bin/seckilld", "./etc/seckilld/seckilld.conf", "./usr/lib/systemd/system/seckilld.service",
                  "./usr/share/seckilld/schema.sql", "./usr/share/seckilld/scripts/app.lua"):
            assert re.search(r"\s%s$" % re.escape(p), listing, re.M), (p, listing)
        info = subprocess.run(["dpkg-deb", "-I", deb, "conffiles"], capture_output=True, text=True, check=True).stdout
        assert info.split() == ["/etc/seckilld/seckilld.conf"], info
    finally:
        shutil.rmtree(out)


def test_installed_binary_serves_a_buy():
    lib.require_env("SECKILLD_REDIS", "SECKILLD_MYSQL")
    root = tempfile.mkdtemp(prefix="sk-install-")
    try:
        prefix = os.path.join(root, "opt")
        install(prefix)
        binary, conf = os.path.join(prefix, "bin", "seckilld"), os.path.join(prefix, "etc", "seckilld", "seckilld.conf")
        unit = os.path.join(prefix, "lib", "systemd", "system", "seckilld.service")
        if shutil.which("systemd-analyze"):
            r = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True, timeout=30)
            assert r.returncode == 0 and unit not in r.stderr, r.stderr
        else:
            print("systemd-analyze not installed: the unit is not verified")
        scripts = re.search(r"^Environment=SECKILLD_SCRIPTS=(\S+)$", read(unit), re.M).group(1)
        assert scripts == os.path.join(prefix, "share", "seckilld", "scripts"), scripts
        r = subprocess.run([binary, "-t", "-c", conf], cwd=root, capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, SECKILLD_SCRIPTS=scripts))
        assert r.returncode == 0, r.stdout + r.stderr
        token = uuid.uuid4().hex
        auth = {"Authorization": "Bearer " + token}
        # the installed config, the services' addresses and a token of our own; scripts as the unit names them
        with lib.Server(scripts, workers=1, conf=conf, binary=binary, cwd=root, wait_healthy=True,
                        env={"SECKILLD_ADMIN_TOKEN": token}) as s:
            status, _, body = s.request("GET", "/healthz")
            assert status == 200, body
            assert "schema %s/share/seckilld/schema.sql applied" % prefix in s.log(), s.log()[-2000:]
            # the config's item: app.init sets it up while the server already serves, so it may still be "being set
            # up" (503, never 404) for a moment after /healthz answers
            def demo():
                status, r = s.json("GET", "/admin/items/demo", None, auth)
                assert status in (200, 503) and (status == 200 or "being set up" in r["message"]), (status, r)
                return r if status == 200 else None
            r = lib.wait_until(demo, 60, what="the config's item set up")
            assert r["item"]["item_id"] == "demo", r
            item = "pkg-" + uuid.uuid4().hex[:12]
            status, r = s.json("PUT", "/admin/items/" + item, {"stock": 3, "limit_per_user": 1}, auth)
            assert status == 200, (status, r)
            status, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "u1"})
            assert status == 200 and r["ok"] is True and r["status"] == "queued", (status, r)
            status, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "u1"})
            assert status == 409, (status, r)
    finally:
        shutil.rmtree(root)
    assert not os.path.exists(root)


lib.main(globals())
