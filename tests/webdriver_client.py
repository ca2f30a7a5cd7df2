"""A minimal W3C WebDriver client (urllib only) driving Debian's headless Chromium via chromedriver.

Only what the browser tests need: open a page, find elements, type a file path into a file input,
click at a point of an element or drag across it (real pointer events), run a script, take a screenshot.
"""
import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1360,860", "--force-device-scale-factor=1"]


def browser_missing() -> str:
    """Why the browser tests cannot run here ("" when they can)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        return f"{' and '.join(missing)} missing (bash tools/setup_env.sh installs Debian's chromium, chromium-driver)"
    return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float, proc=None) -> None:
    """Poll ``url`` until it answers (any HTTP status) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{url}: the server exited with status {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout} s")
            time.sleep(0.2)


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One headless Chromium session (a context manager: the browser and the driver are closed on exit)."""

    def __init__(self, timeout: float = 60.0):
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="part_d2_chromium_")
        self.driver = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        self.timeout = timeout
        try:
            wait_for_http(self.base + "/status", 30, self.driver)
            caps = {"browserName": "chrome", "goog:chromeOptions": {
                "binary": CHROMIUM, "args": CHROMIUM_FLAGS + [f"--user-data-dir={self.profile}"]}}
            self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]
        except Exception:
            self.close()
            raise

    def _call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            value = json.loads(e.read() or b"{}").get("value", {})
            raise WebDriverError(f"{method} {path}: {value.get('error')}: {value.get('message', '')[:500]}")

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def get(self, url: str) -> None:
        self._call("POST", self._s("/url"), {"url": url})

    def find(self, css: str) -> str:
        return self._call("POST", self._s("/element"), {"using": "css selector", "value": css})[ELEMENT]

    def send_keys(self, element: str, text: str) -> None:
        self._call("POST", self._s(f"/element/{element}/value"), {"text": text})

    def click(self, element: str) -> None:
        self._call("POST", self._s(f"/element/{element}/click"), {})

    def click_at(self, element: str, x: float, y: float) -> None:
        """A real mouse click at (x, y) CSS pixels from the element's top-left corner."""
        self.drag(element, [(x, y)])

    def drag(self, element: str, points) -> None:
        """Press the mouse at the first (x, y) (CSS pixels from the element's top-left corner),
        move through the others, release at the last."""
        width, height = self.script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];",
                                    {ELEMENT: element})
        actions = []
        for i, (x, y) in enumerate(points):
            actions.append({"type": "pointerMove", "duration": 0, "origin": {ELEMENT: element},
                            "x": int(round(x - width / 2)), "y": int(round(y - height / 2))})
            if i == 0:
                actions.append({"type": "pointerDown", "button": 0})
        actions.append({"type": "pointerUp", "button": 0})
        self._call("POST", self._s("/actions"), {"actions": [
            {"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": actions}]})
        self._call("DELETE", self._s("/actions"))

    def script(self, source: str, *args):
        return self._call("POST", self._s("/execute/sync"), {"script": source, "args": list(args)})

    def wait_for(self, source: str, timeout: float = 60.0, *args):
        """Poll the script until it returns something truthy; return that."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.script(source, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for: {source}")
            time.sleep(0.1)

    def screenshot(self) -> bytes:
        """The viewport as PNG bytes."""
        return base64.b64decode(self._call("GET", self._s("/screenshot")))

    def close(self) -> None:
        try:
            if getattr(self, "session", None):
                self._call("DELETE", self._s(""))
        finally:
            self.driver.terminate()
            try:
                self.driver.wait(10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
