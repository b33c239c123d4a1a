"""The ``tack`` command line: init, up, status, log.

Every command takes the space folder as an argument, prints what it did in plain words, and
exits non-zero with a one-line reason on failure: 1 for an error the user can fix (not a
space, unreadable store), 3 when another ``tack up`` already runs for the space.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from engine import StoreError
from fsbridge.spacedir import NotASpace, init_space, open_space
from fsbridge.spacelock import AlreadyRunning
from fsbridge.status import history, status

EXIT_ERROR = 1
EXIT_RUNNING = 3


def fail(message: str, code: int = EXIT_ERROR) -> None:
    # rich is imported where it prints, not at start: `tack up` logs without it, and its
    # import would cost every start about 25 ms.
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]tack:[/] {message}", highlight=False)
    sys.exit(code)


@click.group(help="Tack turns a folder into a shared corkboard.")
def main() -> None:
    pass


@main.command(help="Make DIR a space (its files become cards). Safe to run twice.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    try:
        space, created = init_space(directory)
    except (OSError, NotASpace) as exc:
        fail(str(exc))
        return
    if created:
        click.echo(
            f"Made {space.root} a Tack space (id {space.space_id()[:8]}). "
            f"Run `tack up {directory}` to start."
        )
    else:
        click.echo(f"{space.root} is already a Tack space (id {space.space_id()[:8]}).")


@main.command(help="Run Tack on DIR in the foreground until Ctrl-C.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("-v", "--verbose", is_flag=True, help="Log every step.")
@click.option(
    "--join",
    "join_link",
    metavar="LINK",
    default=None,
    help="Join the share link's space in DIR first, as `tack join LINK DIR` does (DIR "
    "must be missing or empty, or already that space), then run: one command, one start.",
)
@click.option(
    "--peer",
    "peers",
    multiple=True,
    metavar="HOST:PORT",
    help="A peer to connect to directly (repeatable); works where multicast is blocked.",
)
@click.option("--port", default=0, show_default=True, help="Port to listen on (0: any free).")
@click.option("--listen", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--no-mdns", is_flag=True, help="Do not announce or browse with mDNS.")
@click.option(
    "--mdns-interface",
    "mdns_interfaces",
    multiple=True,
    metavar="IP",
    default=("127.0.0.1",),
    show_default=True,
    help="IPv4 address of an interface mDNS may use (repeatable). The default keeps "
    "discovery on this machine; pass your LAN address to find other machines.",
)
@click.option("--offline", is_flag=True, help="No networking at all (one device).")
@click.option("--name", default=None, help="This device's name as peers see it (remembered).")
def up(
    directory: Path,
    verbose: bool,
    join_link: str | None,
    peers: tuple[str, ...],
    port: int,
    listen: str,
    no_mdns: bool,
    mdns_interfaces: tuple[str, ...],
    offline: bool,
    name: str | None,
) -> None:
    if join_link is not None:
        _join(join_link, directory, merge=False, then="Starting.")
    elif not directory.is_dir():
        fail(f"{directory} is not a folder; `tack init` or `tack join` makes it a space")
    from fsbridge.daemon import NetOptions, SpaceGone, parse_address, run_forever
    from fsbridge.watcher import WatcherError

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("watchdog", "asyncio", "zeroconf"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        net = (
            None
            if offline
            else NetOptions(
                listen=listen,
                port=port,
                peers=tuple(parse_address(p) for p in peers),
                mdns=not no_mdns,
                mdns_interfaces=mdns_interfaces,
                name=name,
            )
        )
    except ValueError as exc:
        fail(str(exc))
        return
    try:
        run_forever(directory, net=net)
    except AlreadyRunning as exc:
        fail(str(exc), EXIT_RUNNING)
    except (NotASpace, StoreError, SpaceGone, WatcherError) as exc:
        fail(str(exc))


@main.command(help="Print a share link for DIR's space (read-write unless --read-only).")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--read-only", is_flag=True, help="A link that can read but not change.")
def share(directory: Path, read_only: bool) -> None:
    from engine.sharelink import format_link

    try:
        keys = open_space(directory).keys()
    except NotASpace as exc:
        fail(str(exc))
        return
    if not keys.can_write and not read_only:
        fail("this replica is read-only; it can only share read-only links (--read-only)")
    click.echo(format_link(keys, read_only=read_only))


@main.command(help="Make DIR a replica of the space that LINK shares.")
@click.argument("link")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--merge", is_flag=True, help="Allow a non-empty DIR: its files become cards of the space."
)
def join(link: str, directory: Path, merge: bool) -> None:
    _join(link, directory, merge, then=f"Run `tack up {directory}` to sync.")


def _join(link: str, directory: Path, merge: bool, then: str) -> None:
    """Make ``directory`` a replica of the share link's space (``tack join``, and ``tack up
    --join``).  A folder that already is that space is left as it is."""
    from engine.sharelink import ShareLinkError, parse_link
    from fsbridge.spacedir import SpaceDir

    try:
        keys = parse_link(link)
    except ShareLinkError as exc:
        fail(f"that share link does not work: {exc}")
        return
    joined = SpaceDir(directory.resolve()).config_path.exists()
    if not joined and directory.exists() and any(directory.iterdir()) and not merge:
        fail(f"{directory} is not empty; pass --merge to make its files cards of the space")
    try:
        space, created = init_space(directory, keys)
    except (OSError, NotASpace) as exc:
        fail(str(exc))
        return
    mode = "read-write" if keys.can_write else "read-only"
    verb = "Joined" if created else "Already joined"
    click.echo(f"{verb} space {keys.space_id[:8]} in {space.root} ({mode}). {then}")


@main.command(name="status", help="Show the boards and cards of DIR (Tack may be stopped).")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_cmd(directory: Path, as_json: bool) -> None:
    try:
        report = status(open_space(directory))
    except (NotASpace, StoreError) as exc:
        fail(str(exc))
        return
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    out = Console()
    state = "[green]running[/]" if report["running"] else "[yellow]not running[/]"
    out.print(f"Space {report['space']['id'][:8]} at {report['space']['path']} — {state}")
    for board in report["boards"]:
        table = Table(title=f"board {board['path'] or '(home)'}", title_justify="left")
        for col in ("kind", "path", "x", "y", "size", "id"):
            table.add_column(col)
        for card in board["cards"]:
            table.add_row(
                card["kind"],
                card["path"] or "—",
                str(card["x"]),
                str(card["y"]),
                f"{card['width']}×{card['height']}",
                card["id"],
            )
        out.print(table)
    for peer in report.get("peers", []):
        state = "[green]connected[/]" if peer["connected"] else "[yellow]offline[/]"
        sync = " in sync" if peer.get("in_sync") else ""
        out.print(
            f"peer {peer['name'] or '?'} {peer['device'][:7]} {state}{sync} "
            f"({peer['access']} access) {peer['address']}"
        )
    for problem in report["problems"]:
        out.print(f"[red]problem:[/] {problem}")


@main.command(name="log", help="The history of DIR, or of one card (PATH inside DIR).")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("path", required=False)
@click.option("-n", "--limit", default=200, show_default=True, help="Newest entries to show.")
def log_cmd(directory: Path, path: str | None, limit: int) -> None:
    try:
        lines = history(open_space(directory), path, limit)
    except (NotASpace, StoreError) as exc:
        fail(str(exc))
        return
    except LookupError as exc:
        fail(str(exc.args[0]))
        return
    for line in lines:
        click.echo(f"{line.when}  {line.device[:7]}  {line.origin:<5}  {line.path}  {line.summary}")


if __name__ == "__main__":
    main()
