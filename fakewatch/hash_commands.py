"""`fakewatch hashes ...`: PDQ hash lists shared with other teams (export, import) and the one-off hashing of
images stored before intake hashed them (backfill)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from backend.matching.banks import backfill_hashes, export_entries, import_entries
from backend.matching.lists import LABELS, parse_hash_list, write_hash_list
from backend.settings import Settings
from backend.storage.db import session_scope

# Bad rows echoed to the terminal; all of them are counted.
SHOWN_INVALID = 20


@click.group()
def hashes() -> None:
    """PDQ hashes: share what moderators decided, take in other teams' lists, hash old images."""


@hashes.command("export")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the CSV here (default: stdout).")
@click.option("--notes", "with_notes", is_flag=True, help="Include moderators' notes on labelled images.")
@click.pass_obj
def hashes_export(settings: Settings, out_path: Path | None, with_notes: bool) -> None:
    """Write a hash list (pdq_hex,label,note) of every labelled image and imported hash."""
    with session_scope(settings) as session:
        entries = export_entries(session, settings, with_notes=with_notes)
        if out_path is None:
            count = write_hash_list(entries, sys.stdout)
        else:
            with out_path.open("w", newline="", encoding="utf-8") as out:
                count = write_hash_list(entries, out)
    click.echo(f"Exported {count} hash(es).", err=True)


@hashes.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--label", type=click.Choice(LABELS), default=None,
              help="The label of rows whose label column is empty.")
@click.option("--by", "added_by", default=None, help="Who the hashes come from (default: the file's name).")
@click.pass_obj
def hashes_import(settings: Settings, file: Path, label: str | None, added_by: str | None) -> None:
    """Import a hash list (CSV of pdq_hex, label, note): its hashes match like labelled images."""
    try:
        parsed = parse_hash_list(file.read_text(encoding="utf-8"), label=label)
    except (ValueError, UnicodeDecodeError) as error:
        raise click.ClickException(str(error)) from error
    with session_scope(settings) as session:
        report = import_entries(session, parsed, added_by or f"hash list {file.name}")
    for row in parsed.invalid[:SHOWN_INVALID]:
        click.echo(f"line {row.line}: {row.reason} ({row.value})", err=True)
    click.echo(f"Imported {report.added} new hash(es), {report.updated} relabelled, {report.unchanged} unchanged, "
               f"{parsed.invalid_count} row(s) left out.")


@hashes.command("backfill")
@click.option("--limit", type=int, default=None, help="Hash at most this many images (default: all).")
@click.pass_obj
def hashes_backfill(settings: Settings, limit: int | None) -> None:
    """Compute the PDQ hash of every stored image that has none (stored before hashing at intake)."""
    with session_scope(settings) as session:
        report = backfill_hashes(session, settings, limit)
    for problem in report.unreadable[:SHOWN_INVALID]:
        click.echo(f"left unhashed: {problem}", err=True)
    click.echo(f"Hashed {report.hashed} image(s); {len(report.unreadable)} could not be read. Running API and worker "
               f"processes pick them up within FAKEWATCH_MATCH_RELOAD_S ({settings.match_reload_s:g} s).")


COMMANDS = [hashes]
