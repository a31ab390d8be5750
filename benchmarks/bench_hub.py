"""Push and pull of a large model through `zoo hub serve`, against a plain copy of the same file on the same disk.

The server runs as a subprocess (`zoo hub serve`); its resident memory is read from /proc
(VmHWM, the peak) after the transfers. The client is the real `huggingface_hub`: `upload_file`
for the push, `hf_hub_download` into an empty cache for the pull.

Two upload paths: with `--lfs-min-size` the hub takes the file as raw bytes through Git LFS
(the client needs HF_HUB_DISABLE_XET=1, set here); without it the file travels base64-encoded
inside the NDJSON commit, which costs the client and the server a base64 pass each and 4/3 of
the bytes on the wire.

    python benchmarks/bench_hub.py                 # 1 GiB, LFS path
    python benchmarks/bench_hub.py --path regular  # the base64 commit path (about 5 GiB of client memory)
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

TARGET_RATIO = 0.5
TARGET_RSS_MIB = 200


def write_model(path: Path, size: int) -> str:
    """A safetensors file holding one uint8 tensor of random bytes; returns its sha256."""
    from safetensors.numpy import save_file

    save_file({"weights": np.random.default_rng(0).integers(0, 256, size=size, dtype=np.uint8)}, str(path))
    return file_sha256(path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def timed(function, *args, **kwargs) -> float:
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


def copy_durably(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    with open(target, "rb+") as f:
        os.fsync(f.fileno())


def rss_mib(pid: int, field: str) -> float:
    """VmRSS or VmHWM of a process in MiB (0 once it has exited)."""
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        found = None
    return int(found[1]) / 1024 if found else 0.0


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def raw_pull(endpoint: str, repo_id: str, filename: str, target: Path) -> None:
    """GET /resolve with http.client into a file: the hub's own sending rate, without huggingface_hub."""
    connection = http.client.HTTPConnection(endpoint.split("//")[1], timeout=600)
    connection.request("GET", f"/{repo_id}/resolve/main/{filename}")
    response = connection.getresponse()
    assert response.status == 200, response.status
    with open(target, "wb") as f:
        while chunk := response.read(1 << 20):
            f.write(chunk)


def raw_lfs_push(endpoint: str, repo_id: str, model: Path, sha256: str) -> float:
    """The LFS batch call, a PUT of the raw bytes and the commit, with http.client; returns the seconds taken."""
    host, size = endpoint.split("//")[1], model.stat().st_size
    headers = {"Authorization": "Bearer bench-token", "Content-Type": "application/json"}
    start = time.perf_counter()
    connection = http.client.HTTPConnection(host, timeout=600, blocksize=1 << 20)
    batch = {"operation": "upload", "objects": [{"oid": sha256, "size": size}]}
    connection.request("POST", f"/{repo_id}.git/info/lfs/objects/batch", json.dumps(batch), headers)
    href = json.loads(connection.getresponse().read())["objects"][0]["actions"]["upload"]["href"]
    with open(model, "rb") as f:
        connection.request("PUT", href.split(host, 1)[1], body=f, headers={"Content-Length": str(size)})
    assert connection.getresponse().read() is not None
    lines = [
        {"key": "header", "value": {"summary": "raw push"}},
        {"key": "lfsFile", "value": {"path": "raw.safetensors", "algo": "sha256", "oid": sha256, "size": size}},
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    connection.request(
        "POST", f"/api/models/{repo_id}/commit/main", body, {**headers, "Content-Type": "application/x-ndjson"}
    )
    response = connection.getresponse()
    assert response.status == 200, response.read()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the model file (default 1024)")
    parser.add_argument("--path", choices=["lfs", "regular"], default="lfs", help="upload path (default lfs)")
    parser.add_argument("--workdir", type=Path, help="where to put the files (default: a temporary folder)")
    args = parser.parse_args()
    if args.path == "lfs":
        os.environ["HF_HUB_DISABLE_XET"] = "1"  # read when huggingface_hub is imported: before the import below
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    import huggingface_hub
    from huggingface_hub import HfApi, hf_hub_download

    work = Path(tempfile.mkdtemp(prefix="bench-hub-", dir=args.workdir))
    server = None
    seconds: dict[str, float] = {}
    try:
        model = work / "model.safetensors"
        sha256 = write_model(model, args.size_mib << 20)
        os.sync()  # every measurement starts with nothing waiting to be written
        seconds["plain copy (shutil.copyfile)"] = timed(shutil.copyfile, model, work / "copy.safetensors")
        seconds["copy + fsync"] = timed(copy_durably, model, work / "copy-fsync.safetensors")
        for copy in ("copy.safetensors", "copy-fsync.safetensors"):  # their unwritten pages would slow the hub's fsync
            (work / copy).unlink()
        os.sync()

        command = [sys.executable, "-m", "zoo_core.cli", "hub", "serve", str(work / "hub"), "--port", "0"]
        if args.path == "lfs":
            command += ["--lfs-min-size", "10MB"]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        server.stdout.readline()
        endpoint = server.stdout.readline().split("HF_ENDPOINT=")[1].strip()
        idle_rss = rss_mib(server.pid, "VmRSS")
        peak = [idle_rss]

        def sample() -> None:  # VmHWM is the peak too; sampling shows it happened during the transfers
            while server.poll() is None:
                peak[0] = max(peak[0], rss_mib(server.pid, "VmRSS"))
                time.sleep(0.02)

        threading.Thread(target=sample, daemon=True).start()
        api = HfApi(endpoint=endpoint, token="bench-token")
        api.create_repo("bench/model")
        seconds["push (HfApi.upload_file)"] = timed(
            api.upload_file, path_or_fileobj=str(model), path_in_repo=model.name, repo_id="bench/model"
        )
        start = time.perf_counter()
        pulled = Path(hf_hub_download("bench/model", model.name, endpoint=endpoint, cache_dir=work / "cache"))
        seconds["pull (hf_hub_download)"] = time.perf_counter() - start
        assert file_sha256(pulled) == sha256, "the pulled file differs from the pushed one"
        if args.path == "lfs":
            api.create_repo("bench/raw")
            seconds["push, raw HTTP (http.client)"] = raw_lfs_push(endpoint, "bench/raw", model, sha256)
        seconds["pull, raw HTTP (http.client)"] = timed(raw_pull, endpoint, "bench/model", model.name, work / "raw")
        assert file_sha256(work / "raw") == sha256
        hwm = rss_mib(server.pid, "VmHWM")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)

    mib = args.size_mib
    copy = seconds["plain copy (shutil.copyfile)"]
    print(
        f"{mib} MiB model, upload path: {args.path}; {cpu_model()}, {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}, huggingface_hub {huggingface_hub.__version__}"
    )
    for name, taken in seconds.items():
        print(f"{name:32} {taken:6.2f} s  {mib / taken:7.1f} MiB/s  {copy / taken:5.2f}x the plain copy")
    print(f"server RSS: idle {idle_rss:.0f} MiB, peak {max(peak[0], hwm):.0f} MiB (target < {TARGET_RSS_MIB} MiB)")
    ratio = min(copy / seconds["push (HfApi.upload_file)"], copy / seconds["pull (hf_hub_download)"])
    ok = ratio >= TARGET_RATIO and hwm < TARGET_RSS_MIB
    print(
        f"targets (push and pull >= {TARGET_RATIO}x the plain copy, RSS < {TARGET_RSS_MIB} MiB): "
        f"{'met' if ok else 'NOT met'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
