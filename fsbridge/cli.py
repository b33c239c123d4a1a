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
from rich.console import Console
from rich.table import Table

from engine import StoreError
from fsbridge.spacedir import NotASpace, init_space, open_space
from fsbridge.spacelock import AlreadyRunning
from fsbridge.status import history, status

EXIT_ERROR = 1
EXIT_RUNNING = 3

err = Console(stderr=True)


def fail(message: str, code: int = EXIT_ERROR) -> None:
    err.print(f"[bold red]tack:[/] {message}", highlight=False)
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
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("-v", "--verbose", is_flag=True, help="Log every step.")
def up(directory: Path, verbose: bool) -> None:
    from fsbridge.daemon import run_forever

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    try:
        run_forever(directory)
    except AlreadyRunning as exc:
        fail(str(exc), EXIT_RUNNING)
    except (NotASpace, StoreError) as exc:
        fail(str(exc))


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
