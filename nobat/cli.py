"""The `nobat` command: one entry for serving, loading clinic data and looking after the store."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from clinic.clinic_file import read_clinic_files
from clinic.staff_toml import StaffFileError
from db.engine import Database
from db.page_tokens import UnknownPractice
from db.schema import current_revision, head_revision
from ivr.actions.registry import ACTIONS
from ivr.flow_store import FlowStore
from ivr.prompt_build import PromptBuild
from nobat.clinic_loading import PracticeLoad, load_clinics
from nobat.config import DEFAULT_PATH, Config, load_config
from nobat.doctor import AGI_BIN, DIALPLAN, doctor
from nobat.ivr_wiring import PracticeLines
from nobat.logs import setup_logging
from nobat.page_token import practice_token
from nobat.serve import StartupError, open_database, serve
from nobat.try_command import stdin_reader, try_flow

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """Describe every subcommand; `nobat CMD --help` prints its part."""
    parser = argparse.ArgumentParser(
        prog="nobat",
        description="Telephony-first IVR and private consultation calls for clinics, "
                    "on Asterisk (AMI + FastAGI).")
    parser.add_argument("-c", "--config", type=Path,
                        default=Path(os.environ.get("NOBAT_CONFIG", DEFAULT_PATH)),
                        help="server configuration (default: $NOBAT_CONFIG or ./config.toml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="run the server: database, clinic file, status page",
                        description="Open the database (migrating it), load the clinic file "
                                    "named in config.toml, and serve until SIGTERM/SIGINT.")
    clinic = commands.add_parser("clinic", help="load or check the clinic files staff edit")
    clinic_cmds = clinic.add_subparsers(dest="clinic_command", required=True, metavar="ACTION")
    load = clinic_cmds.add_parser(
        "load", help="apply a clinic file, or a folder of them, to the database",
        description="Apply each practice's numbers, doctors, weekly hours and closures in one "
                    "transaction of its own. Loading the same file again changes nothing (a "
                    "file unchanged since its last load is skipped, unless --compare); a "
                    "change that would orphan a booked appointment, or a number or doctor's "
                    "code another practice holds, is refused; the other files still load. "
                    "Exit code 2 if a file is broken, 1 if one is refused.")
    load.add_argument("path", type=Path,
                      help="clinic TOML file, e.g. clinic.toml, or a folder of them (*.toml)")
    load.add_argument("--compare", action="store_true",
                      help="compare every file with its practice's rows, even one unchanged "
                           "since its last load (so rows edited by hand are put right)")
    check = clinic_cmds.add_parser(
        "check", help="check a clinic file, or a folder of them, without loading",
        description="List every problem with file and line, clashes between files too.")
    check.add_argument("path", type=Path, help="clinic TOML file, or a folder of them")
    db = commands.add_parser("db", help="the booking store's schema")
    db_cmds = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_cmds.add_parser("upgrade", help="migrate the schema to the newest revision")
    db_cmds.add_parser("status", help="show the schema revision, and whether it is current")
    prompts = commands.add_parser("prompts", help="the audio prompts Asterisk plays")
    prompts_cmds = prompts.add_subparsers(dest="prompts_command", required=True,
                                          metavar="ACTION")
    prompts_cmds.add_parser(
        "build", help="speak missing or changed prompts with espeak-ng (8 kHz WAV)",
        description="Write prompts/<lang>/<name>.wav for every prompt of the manifest, the "
                    "number/date fragments and the clinic's names and address. Files a clinic "
                    "replaced with recordings are kept.")
    flows = commands.add_parser("flows", help="the IVR flows staff edit")
    flows_cmds = flows.add_subparsers(dest="flows_command", required=True, metavar="ACTION")
    flows_check = flows_cmds.add_parser(
        "check", help="check every flow file; list every problem with file and line")
    flows_check.add_argument("dir", type=Path, nargs="?",
                             help="flows folder (default: ivr.flows in config.toml)")
    doctor_cmd = commands.add_parser(
        "doctor", help="check a deployment: store, files and modes, AMI, FastAGI, the page",
        description="Check what docs/deployment.md sets up, with nobat serve running, and "
                    "say what to do about each problem. Exit code 1 if any.")
    doctor_cmd.add_argument("--asterisk-user", metavar="NAME",
                            help="Asterisk's user (which runs nobat-agi and plays the "
                                 "prompts), checked for what it must read and write; "
                                 "default: `asterisk` if there is such a user")
    doctor_cmd.add_argument("--dialplan", metavar="FILE", type=Path, default=DIALPLAN,
                            help="the dialplan whose NOBAT_FASTAGI and NOBAT_FASTAGI_SECRET "
                                 "must match config.toml (default: %(default)s)")
    doctor_cmd.add_argument("--agi-bin", metavar="DIR", type=Path, default=AGI_BIN,
                            help="Asterisk's astagidir, where nobat-agi must be for the "
                                 "fallback (default: %(default)s)")
    token_cmd = commands.add_parser(
        "page-token", help="make a practice's own status page token; print it once",
        description="Make a new token that opens the status page and /api/status for one "
                    "practice only; the store keeps only its hash. It replaces the "
                    "practice's earlier token and ends the sessions that one opened. The "
                    "token goes to stdout, alone; keep it as a secret.")
    token_cmd.add_argument("practice", help="the practice's key ([clinic] key in its file)")
    try_cmd = commands.add_parser(
        "try", help="run a flow in the terminal against the booking store, without a phone",
        description="Answer one call here with the flows, prompts and store `nobat serve` "
                    "uses: prompts print as their words; type keys and Enter (1, 42#), "
                    "Enter alone for silence, q to hang up. Bookings made here are real.")
    try_cmd.add_argument("flow", nargs="?", help="the flow to start in (default: main)")
    try_cmd.add_argument("--caller", metavar="NUMBER",
                         help="the caller id, e.g. 09121234567 (default: withheld)")
    try_cmd.add_argument("--lang", choices=("fa", "en"), help="start in this language")
    try_cmd.add_argument("--dialled", metavar="NUMBER",
                         help="the number the caller dialled: with several practices, whose "
                              "line answers (default: none, the shared number's menu)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit code says what happened (2: bad config or file)."""
    args = build_parser().parse_args(argv)
    if args.command == "clinic" and args.clinic_command == "check":
        return _check_clinic(args.path)
    try:
        config = load_config(args.config)
    except StaffFileError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if args.command == "serve" and config.web.token_problem:  # a guessable page: not served
        print(config.web.token_problem, file=sys.stderr)
        return EXIT_USAGE
    setup_logging(config.server.log_level, config.server.log_format)
    try:
        return asyncio.run(_run(args, config))
    except StartupError as exc:
        print(f"nobat: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _check_clinic(path: Path) -> int:
    try:
        reads = read_clinic_files(path)
    except StaffFileError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    for read in reads:
        if read.spec is None or read.problems:
            print(StaffFileError(read.problems), file=sys.stderr)
        else:
            print(f"{read.file}: ok ({len(read.spec.doctors)} doctors, "
                  f"{len(read.spec.closures)} closures)")
    return EXIT_USAGE if any(read.problems for read in reads) else 0


async def _run(args: argparse.Namespace, config: Config) -> int:
    if args.command == "serve":
        await serve(config)
        return 0
    if args.command == "doctor":
        findings = await doctor(config, args.asterisk_user, args.dialplan, args.agi_bin)
        print("\n".join(finding.line() for finding in findings))
        return 0 if all(finding.ok for finding in findings) else 1
    if args.command == "try":
        return await try_flow(config, args.flow, args.caller, args.lang, stdin_reader(),
                              sys.stdout, echo=not sys.stdin.isatty(), dialled=args.dialled)
    database = await open_database(config)
    try:
        if args.command == "clinic":
            return await _load_clinics(database, args.path, args.compare)
        if args.command == "prompts":
            return await _build_prompts(config, database)
        if args.command == "flows":
            return await _check_flows(config, database, args.dir)
        if args.command == "page-token":
            return await _page_token(database, args.practice)
        revision = await current_revision(database)
        print(f"schema {revision} (newest {head_revision()}) at {config.database.safe_url}")
        return 0
    finally:
        await database.close()


async def _page_token(database: Database, practice: str) -> int:
    try:
        token = await practice_token(database, practice)
    except UnknownPractice:
        print(f"nobat: no practice {practice!r} in the store (its clinic file's [clinic] key; "
              "load it first)", file=sys.stderr)
        return EXIT_USAGE
    print(token)
    return 0


async def _load_clinics(database: Database, path: Path, compare: bool) -> int:
    try:
        loads = await load_clinics(database, path, compare=compare)
    except StaffFileError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    for load in loads:
        if isinstance(load.failure, StaffFileError):
            print(load.failure, file=sys.stderr)
        elif load.failure is not None:
            print(f"{load.file}: {load.failure}", file=sys.stderr)
        else:
            print(f"{load.file}: {load.summary()}")
    return max(map(_load_exit, loads), default=0)


def _load_exit(load: PracticeLoad) -> int:
    """2 for a broken file, as for every staff file; 1 for a refused load."""
    if load.failure is None:
        return 0
    return EXIT_USAGE if isinstance(load.failure, StaffFileError) else 1


async def _build_prompts(config: Config, database: Database) -> int:
    library = (await PracticeLines(config, database).routes()).prompts
    build = PromptBuild(library, config.ivr.prompts)
    todo = await asyncio.to_thread(build.plan)
    await build.speak_all(todo)
    report = await asyncio.to_thread(build.record, todo)
    print(f"built {len(report.built)}, unchanged {report.unchanged}, "
          f"kept {len(report.kept_recordings)} recordings, failed {len(report.failed)}")
    for failure in report.failed:
        print(f"  failed: {failure}", file=sys.stderr)
    return 1 if report.failed else 0


async def _check_flows(config: Config, database: Database, folder: Path | None) -> int:
    """Check the flows, and each practice's own (flows/<practice>/), as serve would load them."""
    store = FlowStore(folder or config.ivr.flows, ACTIONS, PracticeLines(config, database).routes)
    try:
        snapshot = await store.load()
    except StaffFileError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    own = [(flow, f", practice {key}") for key, flow in snapshot.own_flows()]
    for flow, practice in [*((flow, "") for flow in snapshot.flows.values()), *own]:
        print(f"{flow.source}: ok ({len(flow.nodes)} nodes, version {flow.version}{practice})")
    return 0
