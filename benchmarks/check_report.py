"""Open a ``snakemake --report`` zip in headless Chromium and screenshot its pages.

Checks what a reader of the report sees, in a real browser: the first page (with the
workflow description), and one table opened as the report opens it (the HTML table shown
inline, not a CSV download). Driven through the Chrome DevTools protocol over
``--remote-debugging-pipe`` (no extra Python package). Usage::

    snakemake --cores 2 TARGETS --configfile CONFIG             # a finished run
    snakemake --report results/report.zip TARGETS --configfile CONFIG
    python benchmarks/check_report.py results/report.zip --table study_heads --out shots/

Writes ``shots/first_page.png`` and ``shots/table_<name>.png`` and prints, for the table,
the rows of its HTML (read back from the page's own data) so the check does not rest on
the screenshot alone. Exits 1 when the report has no such HTML table or it holds no rows.
Needs ``chromium`` on PATH (Debian: ``apt-get install chromium``).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path


class Browser:
    """Headless Chromium speaking CDP on file descriptors 3 (commands) and 4 (events)."""

    def __init__(self, width: int = 1600, height: int = 1000):
        exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if exe is None:
            sys.exit("check_report: no chromium on PATH (apt-get install chromium)")
        cmd_r, self._cmd_w = os.pipe()
        self._evt_r, evt_w = os.pipe()
        profile = tempfile.mkdtemp(prefix="check_report_")

        def child_fds():  # chromium reads commands from fd 3 and writes replies to fd 4
            os.dup2(cmd_r, 3)
            os.dup2(evt_w, 4)
            # (pass_fds=(3, 4) keeps them open when Popen closes the other descriptors)

        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "--allow-file-access-from-files", "about:blank"],
            pass_fds=(3, 4), preexec_fn=child_fds, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(evt_w)
        self._buf, self._id, self.session = b"", 0, None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        self.call("Page.enable")

    def call(self, method: str, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._evt_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the debugging pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, js: str):
        out = self.call("Runtime.evaluate", expression=js, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            raise RuntimeError(f"page script failed: {out['exceptionDetails']}")
        return out["result"].get("value")

    def wait_for(self, js: str, timeout: float = 20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = self.evaluate(js)
            if value:
                return value
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for: {js}")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except RuntimeError:
            pass
        self.proc.wait(timeout=10)


# The report's own view switch: what the eye button of a result does (result_view_button.js).
OPEN_RESULT = """(() => {
  const path = Object.keys(results).find(p => p.endsWith('/%s.html') || p === '%s.html');
  if (!path) return null;
  app.setView({content: 'html', contentPath: results[path].data_uri, resultPath: path,
               navbarMode: 'resultinfo'});
  return path;
})()"""

# The table's HTML as the iframe receives it (a data URI in a single-file report, a file of the
# zip otherwise), parsed back into rows of cell texts.
TABLE_ROWS = """(() => {
  const path = Object.keys(results).find(p => p.endsWith('/%s.html') || p === '%s.html');
  const src = results[path].data_uri;
  let text;
  if (src.startsWith('data:')) {
    const b64 = src.split('base64,')[1];
    text = new TextDecoder().decode(Uint8Array.from(atob(b64), c => c.charCodeAt(0)));
  } else {
    const req = new XMLHttpRequest();
    req.open('GET', src, false);
    req.send();
    text = req.responseText;
  }
  const doc = new DOMParser().parseFromString(text, 'text/html');
  return Array.from(doc.querySelectorAll('tr')).map(
      tr => Array.from(tr.children).map(c => c.textContent + (c.querySelector('strong') ? ' [bold]' : '')));
})()"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", help="the zip written by snakemake --report")
    ap.add_argument("--table", default="metrics", help="table file stem to open (e.g. study_heads)")
    ap.add_argument("--out", default="report_check", help="folder for the screenshots")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(args.report) as z:
            z.extractall(tmp)
        index = next(Path(tmp).rglob("report.html"))
        browser = Browser()
        try:
            browser.call("Page.navigate", url=index.resolve().as_uri())
            browser.wait_for("typeof app !== 'undefined' && document.querySelector('#app').children.length > 0")
            time.sleep(1.0)  # let the rule graph render
            browser.screenshot(out / "first_page.png")
            path = browser.evaluate(OPEN_RESULT % (args.table, args.table))
            if path is None:
                print(f"check_report: no {args.table}.html in the report", file=sys.stderr)
                return 1
            browser.wait_for("document.querySelector('iframe') !== null")
            time.sleep(1.0)  # the iframe loads its data URI
            browser.screenshot(out / f"table_{args.table}.png")
            rows = browser.evaluate(TABLE_ROWS % (args.table, args.table))
        finally:
            browser.close()
    print(f"{args.report}: {path} shown inline; screenshots in {out}/")
    for row in rows:
        print(" | ".join(row))
    return 0 if len(rows) > 2 else 1


if __name__ == "__main__":
    sys.exit(main())
