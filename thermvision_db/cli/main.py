"""`thermvision-db`: info, verify, preview, demo, generate from a shell."""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
from pathlib import Path

from thermvision_db import __version__
from thermvision_db.errors import ThermVisionError


def _info(args) -> int:
    import datasets

    from thermvision_db.io.decode import available_backends
    from thermvision_db.schema.members import ARCHIVE_SHA256, IDENTITIES, MEMBERS
    from thermvision_db.schema.splits import RELEASED_SPLITS

    print(f"thermvision-db {__version__}  (datasets {datasets.__version__}; video backends: {', '.join(available_backends()) or 'none'})")
    print(f"released corpus: {len(IDENTITIES)} identities, {len(MEMBERS)} videos, {sum(m.num_frames for m in MEMBERS):,} frames")
    for name, digest in ARCHIVE_SHA256.items():
        print(f"  {name}: sha256 {digest}")
    for split, ids in RELEASED_SPLITS.items():
        print(f"  {split}: {', '.join(ids)}")
    print(f"  train: the other {len(IDENTITIES) - sum(len(v) for v in RELEASED_SPLITS.values())} identities")
    if args.data_dir:
        from thermvision_db.sources.remote import open_release

        source = open_release(args.data_dir)
        present = source.present_members()
        print(f"{args.data_dir}: {len(present)} of {len(MEMBERS)} videos present ({', '.join(source.genders())} archives)")
    return 0


def _verify(args) -> int:
    from thermvision_db.schema.members import ARCHIVE_SHA256, HUB_URL, MEMBERS
    from thermvision_db.sources.base import is_url, local_folder
    from thermvision_db.sources.hub import sha256_file
    from thermvision_db.sources.local import ReleaseSource
    from thermvision_db.tools.qc import RELEASED_MISSING, RELEASED_MULTIPLE, release_qc

    if args.remote or is_url(args.data_dir):  # metadata and central directories only: nothing is downloaded
        from thermvision_db.sources.remote import verify_url

        return 1 if verify_url(args.data_dir if is_url(args.data_dir) else HUB_URL) else 0
    if not args.data_dir:
        raise SystemExit("verify needs DATA_DIR (a folder or a URL), or --remote to check the Hub's zips")
    from thermvision_db.demo.miniature import MARKER, miniature_digests

    data_dir = local_folder(args.data_dir)
    problems = 0
    if not args.no_checksums:
        written = miniature_digests(data_dir)  # the miniature's own zips, as recorded when it wrote them
        for name, expected in ARCHIVE_SHA256.items():
            path = data_dir / name
            if not path.is_file():
                print(f"{name}: not present")
                continue
            actual = sha256_file(path, progress=not args.quiet)
            if actual == expected:
                verdict = "ok"
            elif written.get(name) == actual:
                verdict = f"the miniature corpus (as written by `thermvision-db miniature`, {MARKER}), not the released archive"
            else:
                verdict = f"MISMATCH (expected {expected}); re-download, or this is a modified copy"
                problems += 1
            print(f"{name}: sha256 {actual} {verdict}")
    source = ReleaseSource(data_dir)
    present = source.present_members()
    absent = [m.video_id for m in MEMBERS if m not in present]
    print(f"member table: {len(present)} of {len(MEMBERS)} videos present" + (f"; absent: {', '.join(absent[:10])}{' ...' if len(absent) > 10 else ''}" if absent else ""))
    short = [m.video_id for m in present if not source.exists(m.gender, m.video_member)]
    if short:
        print(f"videos without their MP4 (frames only): {', '.join(short)}")
    table = release_qc(source, present, progress=not args.quiet)
    flagged = table[(table.missing > 0) | (table.multiple > 0) | (table.out_of_bounds > 0) | (table.other_class > 0)
                    | (table.outside_image > 0)]
    print(f"label QC: {int(table.labelled.sum()):,} of {int(table.frames.sum()):,} frames labelled; "
          f"{int(table.missing.sum())} missing, {int(table.multiple.sum())} multiple, {int(table.out_of_bounds.sum())} out of bounds "
          f"(the full release has {RELEASED_MISSING} missing and {RELEASED_MULTIPLE} multiple)")
    if len(flagged):
        print(flagged[["video_id", "frames", "missing", "multiple", "out_of_bounds", "other_class", "outside_image"]]
              .to_string(index=False))
    if args.report:
        table.to_csv(args.report, index=False)
        print(f"wrote {args.report}")
    if args.deep:
        from thermvision_db.tools.qc import deep_check

        bad = deep_check(source, present, progress=not args.quiet)
        for name, problem in bad:
            print(f"BAD {name}: {problem}")
        print(f"deep check: every PNG frame and MP4 decoded; {len(bad)} bad file(s)")
        problems += len(bad)
    return 1 if problems else 0


def _preview(args) -> int:
    from thermvision_db.cli.preview import run_preview

    return run_preview(args)


def _miniature(args) -> int:
    from thermvision_db.demo.miniature import MARKER, check_miniature_target, write_miniature

    root = check_miniature_target(args.data_dir)
    corpus = write_miniature(root, landmarks=True)  # the corpus the README's examples are tested against
    print(f"wrote the miniature corpus in {root}: {len(corpus.identities)} identities ({', '.join(corpus.identities)}), "
          f"{len(corpus.members)} videos of {corpus.frames_per_video} frames at {corpus.size}x{corpus.size}, the two zips "
          f"and their folders in the released layout ({MARKER} tells `verify` it is the miniature); "
          f"load it with load_dataset('thermvision_db', 'frames', data_dir={str(root)!r})")
    return 0


def _demo(args) -> int:
    from thermvision_db.demo.run import run_demo

    run_demo(Path(args.out))
    return 0


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default where it has one worth showing (not None or an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, "", argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Every (sub)command shows defaults in --help; a mistyped option is reported with the closest real one."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def unrecognized(self, extras: list[str]) -> None:
        """`error` for options this (sub)command does not know, naming the closest one."""
        known = [o for action in self._actions for o in action.option_strings]
        hints = []
        for extra in extras:
            close = difflib.get_close_matches(extra.split("=", 1)[0], known, n=1, cutoff=0.7)
            if close:
                hints.append(f"{extra!r}: did you mean {close[0]}?")
        self.error(f"unrecognized arguments: {' '.join(extras)}" + (f" ({'; '.join(hints)})" if hints else ""))


def build_parser() -> Parser:
    parser = Parser(prog="thermvision-db", description="ThermVision-DB loader and generator")
    parser.add_argument("--version", action="version", version=f"thermvision-db {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the loader does")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("info", help="package, decoders, the member table and the fixed splits")
    p.add_argument("data_dir", nargs="?", help="also say what a data folder holds")
    p.set_defaults(func=_info)

    p = sub.add_parser("verify", help="checksums of the two zips, member table presence, label QC report")
    p.add_argument("data_dir", nargs="?", help="the corpus folder (the two zips and/or their extracted folders), "
                   "or a URL (checked without downloading)")
    p.add_argument("--remote", action="store_true",
                   help="compare the Hub's published LFS sha256 with the shipped checksums (no download)")
    p.add_argument("--no-checksums", action="store_true", help="skip hashing the zips (about 20 GiB)")
    p.add_argument("--report", metavar="CSV", help="write the per-video QC table as CSV")
    p.add_argument("--deep", action="store_true", help="decode every PNG frame and MP4 and name each bad file (slow)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar while reading the labels")
    p.set_defaults(func=_verify)

    p = sub.add_parser("preview", help="contact sheet (PNG) of frames with boxes and QC drawn, or a GIF of one video")
    p.add_argument("data_dir", help="the corpus folder: the two zips and/or their extracted folders, the miniature, "
                   "or a generated corpus")
    p.add_argument("--video", help="a video id such as F_31_S1 (S000000_head_pose in a generated corpus)")
    p.add_argument("--videos", type=int, default=4, help="videos in the sheet when --video is not given")
    p.add_argument("--frames", type=int, default=8, help="frames per video in the sheet")
    p.add_argument("--tile", type=int, default=160, help="width of one frame in the sheet, pixels")
    p.add_argument("--fps", type=float, default=15.0, help="frames per second of a GIF")
    p.add_argument("--repair", action="store_true", help="show repaired boxes (interpolated in magenta)")
    p.add_argument("--out", default="thermvision_preview.png", help="a .png contact sheet or a .gif")
    p.set_defaults(func=_preview)

    p = sub.add_parser("miniature", help="write the miniature corpus (released layout, 5 identities) as an example folder")
    p.add_argument("data_dir", help="folder to write (created; must be new, empty or an earlier miniature), "
                   "e.g. ~/data/ThermVision-DB for the README's examples")
    p.set_defaults(func=_miniature)

    p = sub.add_parser("demo", help="miniature corpus -> load -> summary -> pictures; no data or GPU needed")
    p.add_argument("--out", default="thermvision_demo", help="folder for the corpus, cache and pictures (created)")
    p.set_defaults(func=_demo)

    from thermvision_db.sources.download import add_download_parser

    add_download_parser(sub)
    from thermvision_db.tools.export import add_export_parser

    add_export_parser(sub)
    from thermvision_db.hf.door import add_generator_commands

    add_generator_commands(sub)  # `evaluate`, `generate`: checks first that a user's generator.py does not shadow ours
    parser.commands = sub.choices
    return parser


def _is_project_error(err: BaseException) -> bool:
    """Errors raised on purpose by this project (their text says what to do), not bugs or library failures."""
    return isinstance(err, ThermVisionError)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def main(argv: list[str] | None = None) -> int:
    from thermvision_db.hf.door import GeneratorShadowedError

    try:
        parser = build_parser()
    except GeneratorShadowedError as err:  # a user's own generator.py in the working directory
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    args, extras = parser.parse_known_args(argv)
    if extras:  # reported by the subcommand's parser, so its usage is the one shown
        parser.commands[args.command].unrecognized(extras)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except SystemExit as err:  # raised with a message by the commands' own checks
        if isinstance(err.code, str):
            print(f"error: {_one_line(err.code)}", file=sys.stderr)
            return 2
        raise
    except Exception as err:
        if not _is_project_error(err):
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
