"""python -m exercises list | grade EXERCISE FILE

`list` prints one exercise a line, its id first. `grade` runs the same sandbox and checks as the
app and prints the result as JSON (each check: passed, message, figures, evidence); the exit status
is 0 only when every check passes (1: a check failed; 2: the code could not run, or bad usage). A
stretch goal (required: false) is reported and not counted.
Grade a folder of submissions with a loop:

    for f in submissions/*.py; do python -m exercises grade latest-scores "$f" > "$f.json"; done
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict

from . import catalogue, get, grade


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exercises", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="one exercise a line, its id first")
    grading = commands.add_parser("grade", help="grade a file, print JSON")
    grading.add_argument("exercise")
    grading.add_argument("file")
    args = parser.parse_args(argv)
    if args.command == "list":
        for exercise in catalogue():
            print(f"{exercise.id}\tsection {exercise.section}\t{exercise.title}")
        return 0
    try:
        get(args.exercise)
        with open(args.file, encoding="utf-8", errors="surrogateescape") as handle:
            code = handle.read()
    except (ValueError, OSError) as error:
        print(json.dumps({"error": str(error)}), file=sys.stderr)
        return 2
    result = asyncio.run(grade(args.exercise, code))
    print(json.dumps(asdict(result), indent=2, default=str))
    if not result.ran:
        return 2
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
