"""``zoo pull``, ``zoo push``, ``zoo convert`` and ``zoo hub serve``."""

from __future__ import annotations

from pathlib import Path

import click

# --- pull and convert -------------------------------------------------------------------------


@click.command("pull")
@click.argument("name")
@click.option(
    "--revision",
    metavar="REV",
    help="A branch, tag or commit instead of the card's; the card's hashes "
    "then vouch for the files only if the bytes are the same (otherwise: a warning).",
)
@click.option(
    "--local-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Put the files in this directory instead of the Hugging Face cache.",
)
@click.option(
    "--lock",
    "lock_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Record what was pulled in this lock file (default: zoo.lock in --local-dir, else none).",
)
def pull_command(name: str, revision: str | None, local_dir: Path | None, lock_path: Path | None) -> None:
    """Download the model of registry card NAME from the Hub (HF_ENDPOINT) and verify every file's sha256.

    config.json and the weights come from the card's commit. A cached copy is used without network
    access; HF_HUB_OFFLINE=1 never asks the Hub.
    """
    import warnings

    from .client import LOCK_NAME, Lock, pull

    lock_path = lock_path or (local_dir / LOCK_NAME if local_dir else None)
    lock = Lock.load(lock_path) if lock_path and lock_path.exists() else Lock()  # a bad lock stops before the download
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolved = pull(name, revision=revision, local_dir=local_dir)
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)
    click.echo(f"{resolved.name}: {resolved.repo_id}@{resolved.revision}/{resolved.filename}")
    width = max(map(len, resolved.files))
    for file, sha256 in resolved.files.items():
        vouched = f"verified against card {name!r}" if file in resolved.vouched else "unverified"
        click.echo(f"  {file:<{width}}  sha256 {sha256} ({vouched})")
    click.echo(f"  files  {resolved.path}")
    if lock_path:
        lock.add(resolved)
        lock.save(lock_path)
        click.echo(f"  lock   {lock_path}")


@click.command("convert")
@click.argument("checkpoint", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The model: a model YAML (num_classes, backbone, heads), a pipeline YAML with `model:`, "
    "or a model directory's config.json.",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model directory to write (config.json + model.safetensors).",
)
@click.option(
    "--key",
    help="Where the weights are in the checkpoint (default: the first of state_dict, model, "
    "module that holds them, else the top level).",
)
@click.option(
    "--strip-prefix",
    "strip_prefixes",
    multiple=True,
    metavar="PREFIX",
    help="Remove this prefix from weight names, e.g. 'module.' (repeatable).",
)
@click.option(
    "--map",
    "renames",
    multiple=True,
    metavar="OLD=NEW",
    help="Rename weight names starting with OLD to start with NEW instead (repeatable, applied in order).",
)
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "fp16", "bf16"]),
    help="Store the floating weights in this precision and record it in config.json; loading casts them "
    "to the model's (fp32). Default: the model's own precision.",
)
def convert_command(
    checkpoint: Path,
    config_path: Path,
    out_dir: Path,
    key: str | None,
    strip_prefixes: tuple[str, ...],
    renames: tuple[str, ...],
    dtype: str | None,
) -> None:
    """Turn a third-party CHECKPOINT (.pth/.pt/.bin or .safetensors) into a model directory.

    Pickled checkpoints are read with torch.load(weights_only=True): plain tensors and
    containers only, never arbitrary objects. Loading into the model is strict.
    """
    from .convert import convert_checkpoint, parse_renames

    report = convert_checkpoint(
        checkpoint,
        config_path,
        out_dir,
        key=key,
        strip_prefixes=strip_prefixes,
        renames=parse_renames(renames),
        dtype=dtype,
    )
    click.echo(
        f"converted {report.tensors} tensors from {checkpoint}"
        + (f" (key {report.key!r})" if report.key else "")
        + f" into {out_dir}"
        + (f", stored as {dtype}" if dtype else "")
    )


# --- push and the local hub server ---------------------------------------------------------------


@click.command("push")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--repo", "repo_id", required=True, metavar="ORG/NAME", help="Hub repository; created if needed.")
@click.option("--create-pr", is_flag=True, help="Open a pull request with the files instead of committing.")
@click.option("--private", is_flag=True, help="Create the repository private (needs HF_TOKEN).")
@click.option("--revision", metavar="BRANCH", help="Commit to this branch (created from main if new).")
@click.option("--name", "card_name", help="Registry card name (default: the repository name, lower-cased).")
@click.option(
    "--metrics",
    "metrics_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="metrics.json of a `zoo run` with this model (default: RUN_DIR/metrics.json if present).",
)
@click.option("--license", default="apache-2.0", show_default=True, help="License of the weights.")
@click.option("--card-out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the card to this file.")
def push_command(
    run_dir: Path,
    repo_id: str,
    create_pr: bool,
    private: bool,
    revision: str | None,
    card_name: str | None,
    metrics_path: Path | None,
    license: str,
    card_out: Path | None,
) -> None:
    """Publish RUN_DIR (config.json + model.safetensors + a README model card) in one commit to the Hub
    named by HF_ENDPOINT, and print its registry card."""
    from ..fileio import atomic_write_text
    from .push import push

    result = push(
        run_dir,
        repo_id,
        create_pr=create_pr,
        private=private,
        revision=revision,
        card_name=card_name,
        metrics_path=metrics_path,
        license=license,
    )
    card_yaml = result.card.to_yaml()
    if card_out:
        atomic_write_text(card_out, card_yaml)
    where = f" as {result.pr_revision}" if result.pr_revision else ""
    click.echo(f"pushed {result.size} bytes (sha256 {result.sha256}) to {repo_id}@{result.commit_oid}{where}", err=True)
    click.echo(
        f"registry card{f' written to {card_out}' if card_out else ''}: add it to registry/ or to a folder in "
        f"ZOO_REGISTRY_PATH, then `zoo pull {result.card.name}`",
        err=True,
    )
    click.echo(card_yaml, nl=False)


@click.group("hub")
def hub_group() -> None:
    """Run your own Hugging Face Hub-compatible server (for air-gapped teams)."""


class ByteSize(click.ParamType):
    """A size in bytes: 1048576, 500MB, 5GiB."""

    name = "SIZE"
    UNITS = {
        "": 1,
        "b": 1,
        "kb": 10**3,
        "mb": 10**6,
        "gb": 10**9,
        "tb": 10**12,
        "kib": 2**10,
        "mib": 2**20,
        "gib": 2**30,
        "tib": 2**40,
    }

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        import re

        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
        if not found or found[2].lower() not in self.UNITS or float(found[1]) * self.UNITS[found[2].lower()] < 1:
            self.fail(f"{value!r} is not a size: write bytes, or a number with KB, MB, GB, KiB, MiB or GiB", param, ctx)
        return int(float(found[1]) * self.UNITS[found[2].lower()])


@hub_group.command("serve")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port; 0 picks a free one."
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Tokens, one `TOKEN SCOPE` pair a line (SCOPE read or write): writes then need a write token, "
    "private repositories a read token. Without it the hub is open to anyone who can reach it.",
)
@click.option("--read-only", is_flag=True, help="Refuse every upload and change (403): a mirror to download from.")
@click.option(
    "--max-file-size", type=ByteSize(), default="5GiB", show_default=True, help="Largest file an upload may hold."
)
@click.option(
    "--request-timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds a client may stay silent while sending a request (or not read an answer) before it is cut.",
)
@click.option(
    "--lfs-min-size",
    type=ByteSize(),
    default=None,
    help="Take files of this size or more as raw bytes through Git LFS instead of base64 in the commit "
    "(much faster for large weights); uploaders must then set HF_HUB_DISABLE_XET=1.",
)
def serve_command(
    root: Path,
    host: str,
    port: int,
    token_file: Path | None,
    read_only: bool,
    max_file_size: int,
    request_timeout: float,
    lfs_min_size: int | None,
) -> None:
    """Serve the repositories stored in ROOT (created if needed) until Ctrl-C."""
    import logging
    import signal

    from ..errors import ConfigError, DataError

    try:
        from .server import HubServer, Tokens
    except ImportError as exc:  # the optional extra
        raise ConfigError(
            f"`zoo hub serve` needs the hub-server extra ({exc.name or exc} is not installed): "
            "pip install 'zoo-core[hub-server]'"
        ) from None
    tokens = Tokens.load(token_file) if token_file else None
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    for name, level in (
        ("uvicorn.error", logging.WARNING),
        ("uvicorn.access", logging.INFO),
        ("zoo_core.hub", logging.INFO),
    ):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(level)
    try:
        hub = HubServer(
            root,
            host=host,
            port=port,
            log_requests=True,
            tokens=tokens,
            read_only=read_only,
            max_file_size=max_file_size,
            request_timeout=request_timeout,
            lfs_min_size=lfs_min_size,
            shutdown_timeout=30,
        )
    except OSError as exc:
        raise DataError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port") from None
    endpoint = hub.url
    if host in ("0.0.0.0", "::"):  # every interface: others reach it by this machine's name
        import socket

        endpoint = hub.url.replace(f"[{host}]" if ":" in host else host, socket.gethostname(), 1)
    click.echo(f"serving the hub in {root} at {hub.url}")
    click.echo(f"point the zoo and huggingface_hub at it:  export HF_ENDPOINT={endpoint}")
    access = f"tokens from {token_file}" if tokens else "open (no token needed)"
    click.echo(f"access: {access}{', read-only' if read_only else ''}; press Ctrl-C to stop")
    if tokens is None and not _is_loopback(host):
        can = "write to the hub and read its private repositories"
        if read_only:
            can = "read every repository on the hub, the private ones too"
        click.echo(f"warning: --host {host} without --token-file: anyone who can reach this port can {can}", err=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
    try:
        hub.serve_forever()
    except KeyboardInterrupt:
        click.echo("hub stopped", err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@hub_group.command("gc")
@click.argument("root", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def gc_command(root: Path, dry_run: bool) -> None:
    """Remove the blobs no commit of the hub in ROOT references, and uploads that never finished.

    Safe while `zoo hub serve` runs on ROOT: it holds the root's lock, as commits do.
    """
    from .store import Store

    removed = Store(root, create=False).collect_garbage(dry_run=dry_run)
    for path, size in removed:
        click.echo(f"{'would remove' if dry_run else 'removed'} {path.relative_to(root)} ({size} bytes)")
    total = sum(size for _, size in removed)
    freed = "would free" if dry_run else "freed"
    click.echo(f"{freed} {total} bytes ({total / 2**20:.1f} MiB) in {len(removed)} files")
