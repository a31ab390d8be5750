"""Test helper: serve local git repositories over the Hugging Face Hub protocol with ``olah``.

olah (offline mode) reads non-bare git repositories under ``<mirrors>/models/<org>/<name>``
and answers ``huggingface_hub`` downloads at branches, tags and full commit ids; new
commits are served without a restart. Everything it writes stays under its ``root``.

    with OlahMirror(tmp_path / "olah") as mirror:
        commit = make_model_repo(mirror.mirrors_dir, "org/name", {"config.json": b"{}"})
        hf_hub_download("org/name", "config.json", revision=commit, endpoint=mirror.endpoint, ...)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# Git that ignores the user's configuration (no signing, hooks or templates) and needs no identity.
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "zoo-tests",
    "GIT_AUTHOR_EMAIL": "zoo-tests@example.com",
    "GIT_COMMITTER_NAME": "zoo-tests",
    "GIT_COMMITTER_EMAIL": "zoo-tests@example.com",
}


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
        timeout=30,
    )
    return result.stdout.strip()


def make_model_repo(
    mirrors_dir: Path, repo_id: str, files: dict[str, bytes], branch: str = "main", message: str = "upload"
) -> str:
    """Commit ``files`` to the model repository ``repo_id`` (created if needed); return the full commit id.

    Files are plain git blobs (no LFS). Calling it again adds a commit, moving ``branch``.
    """
    repo = Path(mirrors_dir) / "models" / repo_id
    if (repo / ".git").exists():
        git(repo, "checkout", "-q", "-B", branch)
    else:
        repo.mkdir(parents=True)
        git(repo, "init", "-q", "-b", branch)
    for name, data in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def olah_config(port: int, mirrors_dir: Path, repos_dir: Path) -> str:
    # `offline` belongs to [accessibility]; without it olah asks huggingface.co before serving a mirror.
    # mirrors-path must be a list, and paths absolute (olah resolves them against its working directory).
    return (
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{repos_dir}"\n'
        f'mirrors-path = ["{mirrors_dir}"]\n\n[accessibility]\noffline = true\n'
    )


class OlahMirror:
    """``olah-cli`` in a subprocess serving ``root/mirrors`` on a free port of 127.0.0.1."""

    def __init__(self, root: Path, startup_timeout: float = 30.0):
        self.root = Path(root).resolve()
        self.mirrors_dir = self.root / "mirrors"
        self.startup_timeout = startup_timeout
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OlahMirror:
        self.mirrors_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):  # another process may take the free port before olah binds it
            try:
                self._launch()
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
        return self

    def _launch(self) -> None:
        self.port = free_port()
        config = self.root / "olah.toml"
        config.write_text(olah_config(self.port, self.mirrors_dir, self.root / "repos"))
        command = [shutil.which("olah-cli") or sys.executable]
        if command[0] == sys.executable:
            command += ["-m", "olah.server"]
        command += ["-c", str(config), "--log-path", str(self.root / "logs")]
        # olah logs every request: to a file, never a pipe nobody reads. The client's HF_* settings stay out.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        with open(self.root / "olah.out", "ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        # Any HTTP answer means ready: an unknown repo gets 401 at once (GET / answers 500 in olah).
        probe = f"{self.endpoint}/api/models/probe/probe/revision/main"
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                log = (self.root / "olah.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"olah exited with code {self.proc.returncode}:\n{log}")
            try:
                urllib.request.urlopen(probe, timeout=1).close()
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    message = f"olah did not answer on {self.endpoint} within {self.startup_timeout} s"
                    raise TimeoutError(message) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self) -> OlahMirror:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
