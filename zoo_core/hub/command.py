"""``zoo pull``, ``zoo push``, ``zoo convert`` and ``zoo hub serve``."""

from __future__ import annotations

from pathlib import Path

import click

# --- pull and convert -------------------------------------------------------------------------

@click.command("pull")
@click.argument("name")
@click.option("--revision", metavar="REV", help="A branch, tag or commit instead of the card's; the card's sha256 "
              "then vouches for the file only if the bytes are the same (otherwise: a warning).")
@click.option("--local-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Put the files in this directory instead of the Hugging Face cache.")
@click.option("--lock", "lock_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Record what was pulled in this lock file (default: zoo.lock in --local-dir, else none).")
def pull_command(name: str, revision: str | None, local_dir: Path | None, lock_path: Path | None) -> None:
    """Download the weights of registry card NAME from the Hub (HF_ENDPOINT) and verify their sha256.

    A cached copy is used without network access; HF_HUB_OFFLINE=1 never asks the Hub.
    """
    import warnings

    from .client import LOCK_NAME, Lock, pull

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolved = pull(name, revision=revision, local_dir=local_dir)
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)
    vouched = f"verified against card {name!r}" if resolved.verified else "unverified"
    click.echo(f"{resolved.name}: {resolved.repo_id}@{resolved.revision}/{resolved.filename}")
    click.echo(f"  sha256 {resolved.sha256} ({vouched})")
    click.echo(f"  files  {resolved.path}")
    lock_path = lock_path or (local_dir / LOCK_NAME if local_dir else None)
    if lock_path:
        lock = Lock.load(lock_path) if lock_path.exists() else Lock()
        lock.add(resolved)
        lock.save(lock_path)
        click.echo(f"  lock   {lock_path}")


@click.command("convert")
@click.argument("checkpoint", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The model: a model YAML (num_classes, backbone, heads), a pipeline YAML with `model:`, "
                   "or a model directory's config.json.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model directory to write (config.json + model.safetensors).")
@click.option("--key", help="Where the weights are in the checkpoint (default: the first of state_dict, model, "
              "module that holds them, else the top level).")
@click.option("--strip-prefix", "strip_prefixes", multiple=True, metavar="PREFIX",
              help="Remove this prefix from weight names, e.g. 'module.' (repeatable).")
@click.option("--map", "renames", multiple=True, metavar="OLD=NEW",
              help="Rename weight names starting with OLD to start with NEW instead (repeatable, applied in order).")
def convert_command(checkpoint: Path, config_path: Path, out_dir: Path, key: str | None,
                    strip_prefixes: tuple[str, ...], renames: tuple[str, ...]) -> None:
    """Turn a third-party CHECKPOINT (.pth/.pt/.bin or .safetensors) into a model directory.

    Pickled checkpoints are read with torch.load(weights_only=True): plain tensors and
    containers only, never arbitrary objects. Loading into the model is strict.
    """
    from .convert import convert_checkpoint, parse_renames

    report = convert_checkpoint(checkpoint, config_path, out_dir, key=key, strip_prefixes=strip_prefixes,
                                renames=parse_renames(renames))
    click.echo(f"converted {report.tensors} tensors from {checkpoint}"
               + (f" (key {report.key!r})" if report.key else "") + f" into {out_dir}")


# --- push and the local hub server ---------------------------------------------------------------

@click.command("push")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--repo", "repo_id", required=True, metavar="ORG/NAME", help="Hub repository; created if needed.")
@click.option("--create-pr", is_flag=True, help="Open a pull request with the files instead of committing.")
@click.option("--private", is_flag=True, help="Create the repository private (needs HF_TOKEN).")
@click.option("--revision", metavar="BRANCH", help="Commit to this branch (created from main if new).")
@click.option("--name", "card_name", help="Registry card name (default: the repository name, lower-cased).")
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False, path_type=Path),
              help="metrics.json of a `zoo run` with this model (default: RUN_DIR/metrics.json if present).")
@click.option("--license", default="apache-2.0", show_default=True, help="License of the weights.")
@click.option("--card-out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the card to this file.")
def push_command(run_dir: Path, repo_id: str, create_pr: bool, private: bool, revision: str | None,
                 card_name: str | None, metrics_path: Path | None, license: str, card_out: Path | None) -> None:
    """Publish RUN_DIR (config.json + model.safetensors + a README model card) in one commit to the Hub
    named by HF_ENDPOINT, and print its registry card."""
    from ..fileio import atomic_write_text
    from .push import push

    result = push(run_dir, repo_id, create_pr=create_pr, private=private, revision=revision, card_name=card_name,
                  metrics_path=metrics_path, license=license)
    card_yaml = result.card.to_yaml()
    if card_out:
        atomic_write_text(card_out, card_yaml)
    where = f" as {result.pr_revision}" if result.pr_revision else ""
    click.echo(f"pushed {result.size} bytes (sha256 {result.sha256}) to {repo_id}@{result.commit_oid}{where}", err=True)
    click.echo(f"registry card{f' written to {card_out}' if card_out else ''}: add it to registry/ or to a folder in "
               f"ZOO_REGISTRY_PATH, then `zoo pull {result.card.name}`", err=True)
    click.echo(card_yaml, nl=False)


@click.group("hub")
def hub_group() -> None:
    """Run your own Hugging Face Hub-compatible server (for air-gapped teams)."""


@hub_group.command("serve")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port; 0 picks a free one.")
def serve_command(root: Path, host: str, port: int) -> None:
    """Serve the repositories stored in ROOT (created if needed) until Ctrl-C."""
    import signal

    from ..errors import DataError
    from .server import HubServer

    try:
        hub = HubServer(root, host=host, port=port, log_requests=True)
    except OSError as exc:
        raise DataError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port") from None
    click.echo(f"serving the hub in {root} at {hub.url}")
    click.echo(f"point the zoo and huggingface_hub at it:  export HF_ENDPOINT={hub.url}")
    click.echo("press Ctrl-C to stop")
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
    try:
        hub.serve_forever()
    except KeyboardInterrupt:
        click.echo("hub stopped", err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
