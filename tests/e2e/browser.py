"""Headless Chromium (Debian's) driven over the DevTools protocol, for the tests that use a page as a person does:
load it, type into a field and click a button (real input events at the element's place on the screen, not a
JavaScript .click()), and read the page back with JavaScript. The protocol's websocket is Debian's python3-websocket
(deps/install.sh); nothing from npm.

    with browser.Chromium() as b:
        b.goto("http://127.0.0.1:%d/queue/ITEM" % port)
        b.type("#user", "alice")
        b.click("#join")
        b.wait("document.body.dataset.state === 'waiting'", what="the place")
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

import lib

try:
    import websocket
except ImportError:
    # Debian's python3-websocket is installed for Debian's python3; a python3 ahead of it in PATH (pyenv, a venv) of
    # the same minor version can use it as well: the package is pure Python
    debian = "/usr/lib/python3/dist-packages"
    if not os.path.isdir(os.path.join(debian, "websocket")):
        raise AssertionError("python3-websocket missing: deps/install.sh installs it")
    sys.path.append(debian)
    import websocket


class Chromium:
    """one headless Chromium with one page (tab), driven over the DevTools protocol"""

    def __init__(self, timeout=60):
        exe = shutil.which("chromium")
        assert exe, "chromium missing: deps/install.sh installs Debian's chromium"
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="sk-chromium-")
        self.port = lib.free_port()
        self.errors = []   # exceptions thrown and console errors of the page
        self.log = tempfile.TemporaryFile()
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--hide-scrollbars", "--window-size=1000,900", "--user-data-dir=" + self.profile,
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=%d" % self.port,
             "--remote-allow-origins=*", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.ws = None
        self.seq = 0
        try:
            target = lib.wait_until(self._page_target, timeout, interval=0.2, what="Chromium's DevTools endpoint")
            self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=timeout,
                                                  suppress_origin=True)
            self.send("Page.enable")
            self.send("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def _page_target(self):
        if self.proc.poll() is not None:
            self.log.seek(0)
            raise AssertionError("chromium exited with %s:\n%s" % (self.proc.returncode, self.log.read()[-2000:]))
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % self.port, timeout=5) as r:
                targets = json.load(r)
        except OSError:
            return None
        return next((t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")), None)

    def send(self, method, **params):
        """one DevTools command; its result (events that arrive meanwhile are looked at for the page's errors)"""
        self.seq += 1
        self.ws.send(json.dumps({"id": self.seq, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.seq:
                assert "error" not in msg, "%s: %s" % (method, msg["error"])
                return msg["result"]
            if msg.get("method") == "Runtime.exceptionThrown":
                self.errors.append(msg["params"]["exceptionDetails"].get("exception", {}).get("description")
                                   or msg["params"]["exceptionDetails"].get("text"))
            elif msg.get("method") == "Runtime.consoleAPICalled" and msg["params"]["type"] == "error":
                self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in msg["params"]["args"]))

    def eval(self, expression):
        """the value of a JavaScript expression in the page (a promise is awaited)"""
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in r, "%s: %s" % (expression, r["exceptionDetails"])
        return r["result"].get("value")

    def wait(self, expression, timeout=None, what=None):
        """waits until a JavaScript expression is true in the page; its value"""
        return lib.wait_until(lambda: self.eval(expression), timeout or self.timeout, interval=0.1,
                              what=what or expression)

    def goto(self, url):
        """loads url and waits until the page and its scripts are loaded"""
        self.send("Page.navigate", url=url)
        self.wait("document.readyState === 'complete' && location.href === %s" % json.dumps(url),
                  what="%s loaded" % url)

    def reload(self):
        """reloads the page (sessionStorage stays: the same tab) and waits until it is loaded again"""
        self.eval("window.__sk_before_reload = true")
        self.send("Page.reload", ignoreCache=True)
        self.wait("!window.__sk_before_reload && document.readyState === 'complete'", what="the page reloaded")

    def text(self, selector):
        return self.eval("document.querySelector(%s).textContent" % json.dumps(selector))

    def visible(self, selector):
        return self.eval("(() => { const e = document.querySelector(%s); return !!e && e.getClientRects().length > 0; })()"
                         % json.dumps(selector))

    def click(self, selector):
        """a left click in the middle of a visible element, as the mouse does it"""
        box = self.wait("(() => { const e = document.querySelector(%s); if (!e || e.disabled) return null;"
                        " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                        " return r.width > 0 && r.height > 0 ? [r.x + r.width / 2, r.y + r.height / 2] : null; })()"
                        % json.dumps(selector), what=selector + " visible and enabled")
        x, y = box
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        self.send("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", clickCount=1)
        self.send("Input.dispatchMouseEvent", type="mouseReleased", x=x, y=y, button="left", clickCount=1)

    def type(self, selector, text):
        """clicks into a field, clears it and types text into it"""
        self.click(selector)
        self.eval("document.querySelector(%s).select()" % json.dumps(selector))
        self.send("Input.dispatchKeyEvent", type="keyDown", key="Backspace", code="Backspace",
                  windowsVirtualKeyCode=8)
        self.send("Input.dispatchKeyEvent", type="keyUp", key="Backspace", code="Backspace", windowsVirtualKeyCode=8)
        self.send("Input.insertText", text=text)

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))

    def close(self):
        if self.ws is not None:
            try:
                self.ws.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
