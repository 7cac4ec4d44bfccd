"""deploy/nginx.conf for the tests: its directives read back, and the file made runnable here
(the service at a loopback address instead of compose's `orchestrator`, files in a temporary
directory instead of the image's paths), everything else as written."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

NGINX_CONF = Path(__file__).parents[2] / "deploy" / "nginx.conf"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(path).exists()),
        None,
    )


def conf_text() -> str:
    return NGINX_CONF.read_text(encoding="utf-8")


def directive(name: str, text: str | None = None) -> list[str]:
    """The arguments of each `name ...;` in the file (comments ignored), in order."""
    text = conf_text() if text is None else text
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    return [found.strip() for found in re.findall(rf"(?m)^\s*{name}\s+([^;{{}}]*);", code)]


def refusals() -> dict[str, tuple[int, str]]:
    """The internal locations answering nginx's own refusals: path -> (status, body)."""
    found = re.findall(r"location = (\S+) \{[^}]*?return (\d+) '([^']*)';", conf_text(), re.S)
    return {path: (int(status), body) for path, status, body in found}


def runnable_conf(upstream: str, listen: str, workdir: Path, **replace: str) -> Path:
    """The file as compose mounts it, made to run here: `upstream` for the service, `listen`
    for its address, its pid and temporary files in `workdir`; `replace` swaps other
    directives' arguments (e.g. a shorter timeout)."""
    text = conf_text()
    swaps = {
        "server orchestrator:8000;": f"server {upstream};",
        "listen 8000;": f"listen {listen};",
    }
    swaps["pid /var/run/nginx.pid;"] = f"pid {workdir / 'nginx.pid'};"
    for old, new in swaps.items():
        assert old in text, old
        text = text.replace(old, new)
    for name, value in replace.items():
        text, count = re.subn(rf"(?m)^(\s*{name}\s+)[^;]*;", rf"\g<1>{value};", text)
        assert count == 1, name
    temp = "".join(
        f"\n    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("\nhttp {", "\nhttp {" + temp, 1)
    conf = workdir / "nginx.conf"
    conf.write_text(text, encoding="utf-8")
    return conf


def check(conf: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the file."""
    binary = nginx_binary()
    assert binary is not None
    return subprocess.run(
        [binary, "-t", "-c", str(conf), "-p", str(conf.parent)],
        capture_output=True,
        text=True,
        timeout=30,
    )
