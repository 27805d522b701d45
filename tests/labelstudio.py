"""A real Label Studio (1.23.2, SQLite) for integration tests: the session fixture ``label_studio``.

Label Studio lives in its own virtualenv (``.venv-labelstudio``, made by
``scripts/setup_labelstudio.sh``) so its pins never touch triage's. The fixture starts
``label-studio start`` on a free loopback port with a fresh data directory, an admin user and a
legacy API token, waits for ``/health``, and stops it at the end of the session.

Notes on 1.23.2 (checked against its source, label_studio/server.py and core/argparser.py):

* ``--host`` is NOT the bind address: it is the public base URL used to build links; the bind
  address is ``--internal-host`` (default 0.0.0.0).
* If the port is busy, ``label-studio start`` silently moves to the next free one, so the fixture
  checks that the server it reaches is the one it started (the legacy token must work).
* Legacy tokens are refused (401) unless the organization has ``legacy_api_tokens_enabled``; the
  organization is created on first start with it set from ``--enable-legacy-api-token`` or the
  env ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true`` (we pass both).
* ``LATEST_VERSION_CHECK=false`` stops the start-up call to pypi.org (no internet here).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from triage.runtime.broker import free_port

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-labelstudio"
SETUP = REPO / "scripts" / "setup_labelstudio.sh"
START_TIMEOUT_S = 300.0  # migrations alone took 3 min on a loaded 2-core machine
LOG_TAIL_CHARS = 6000


def _tail(path: Path, n: int = LOG_TAIL_CHARS) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError as e:
        return f"(no log: {e})"


def _request(method: str, url: str, *, headers: Optional[dict[str, str]] = None, body: Any = None,
             timeout: float = 10.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Accept": "application/json", **({"Content-Type": "application/json"} if data else {}), **(headers or {}),
    })
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw = e.read()
        status = e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def ensure_installed() -> Path:
    """The ``label-studio`` executable. Installing it is the setup script's job (./scripts/test.sh
    runs it): a test tier installs nothing, and fails when it is missing."""
    exe = VENV / "bin" / "label-studio"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run {SETUP.relative_to(REPO)}", pytrace=False)
    return exe


@dataclass
class LabelStudioServer:
    url: str
    token: str  # legacy API token ("Authorization: Token <token>")
    username: str
    password: str
    log_path: Path
    data_dir: Path
    proc: subprocess.Popen = field(repr=False)
    _pat: Optional[str] = field(default=None, repr=False)

    def api(self, method: str, path: str, body: Any = None, *, token: Optional[str] = None) -> tuple[int, Any]:
        """A raw call with the legacy token (for test set-up, not via the client under test)."""
        return _request(method, self.url + path, body=body,
                        headers={"Authorization": f"Token {token or self.token}"})

    def log(self) -> str:
        return _tail(self.log_path)

    def personal_access_token(self) -> str:
        """The admin's Personal Access Token: a JWT *refresh* token (header.payload.signature).

        1.23.2: ``POST /api/token/`` (any auth, here the legacy token) creates it and returns
        ``{"token": <full JWT>, ...}`` once; a second POST gives 409 while one is valid (the list
        endpoint shows them truncated), so it is created once per session and cached. PATs need the
        organization's ``api_tokens_enabled`` (default True); we make sure of it via
        ``POST /api/jwt/settings``.
        """
        if self._pat is not None:
            return self._pat
        status, body = self.api("GET", "/api/jwt/settings")
        if status != 200:
            raise AssertionError(f"GET /api/jwt/settings -> {status} {body}")
        if not body.get("api_tokens_enabled") or not body.get("legacy_api_tokens_enabled"):
            status, body = self.api("POST", "/api/jwt/settings",
                                    {"api_tokens_enabled": True, "legacy_api_tokens_enabled": True})
            if status not in (200, 201):
                raise AssertionError(f"POST /api/jwt/settings -> {status} {body}")
        status, body = self.api("POST", "/api/token/", {})
        if status != 201:
            raise AssertionError(f"POST /api/token/ -> {status} {body}")
        self._pat = str(body["token"])
        return self._pat

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(20)


def start_label_studio(data_dir: Path, log_path: Path, *, timeout_s: float = START_TIMEOUT_S,
                       extra_env: Optional[dict[str, str]] = None) -> LabelStudioServer:
    exe = ensure_installed()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    username = "admin@example.com"
    password = secrets.token_urlsafe(16)  # may start with "-": passed as --password=..., or argparse takes it for a flag
    token = secrets.token_hex(20)  # 40 hex characters
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "DJANGO_DB": "sqlite",
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "SSRF_PROTECTION_ENABLED": "false",  # webhooks to 127.0.0.1
        "ML_BLOCK_LOCAL_IP": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "LATEST_VERSION_CHECK": "false",  # no call to pypi.org at start
        "COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "HOME": str(data_dir),  # anything LS writes under ~ stays in the tmp dir
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    for k in ("USERNAME", "PASSWORD", "USER_TOKEN", "HOST", "PORT", "LABEL_STUDIO_USERNAME",
              "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN", "DJANGO_SETTINGS_MODULE"):
        env.pop(k, None)
    cmd = [str(exe), "start", "--no-browser", "--port", str(port), "--internal-host", "127.0.0.1",
           "--host", url, "--data-dir", str(data_dir), "--username", username, f"--password={password}",
           "--user-token", token, "--enable-legacy-api-token", "--log-level", "INFO"]
    log = open(log_path, "ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=data_dir, start_new_session=True)
    log.close()
    server = LabelStudioServer(url=url, token=token, username=username, password=password,
                               log_path=log_path, data_dir=data_dir, proc=proc)
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        if proc.poll() is not None:
            pytest.fail(f"label-studio exited with {proc.returncode} before answering:\n{_tail(log_path)}",
                        pytrace=False)
        try:
            status, _ = _request("GET", url + "/health", timeout=2)
            if status == 200:
                status, body = server.api("GET", "/api/current-user/whoami")
                if status == 200 and body.get("email") == username:
                    return server
                last = f"whoami -> {status} {body}"
        except (OSError, ValueError) as e:
            last = repr(e)
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"label-studio did not answer at {url} within {timeout_s:.0f}s ({last}):\n"
                        f"{_tail(log_path)}", pytrace=False)
        time.sleep(0.5)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    root = tmp_path_factory.mktemp("label-studio")
    server = start_label_studio(root / "data", root / "label-studio.log")
    try:
        yield server
    finally:
        server.stop()
