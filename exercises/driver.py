"""The child's side of a run: runs inside the sandbox (a copy of this file is /lab/driver.py).

    python -I -S -B driver.py PATH...        (PATH: folders put first on sys.path)

It answers the grader one request at a time, as JSON lines: `{"op": ..., "args": {...}}` in,
`{"ok": true, "value": ...}` or `{"ok": false, "error": {...}}` out. The first request names the
exercise's ops module and how to reach the run's database and Redis; "load" runs the learner's
code as the module `solution`; every other op is a function of the ops module.

Nothing here is trusted by the grader: the learner's code runs in this process and may change
anything in it. The grade comes from what the grader measures outside (the database's log, its
Redis, its own clock) and from comparing the answers with data the grader wrote.
"""

import asyncio
import importlib
import json
import linecache
import os
import sys
import time
import traceback
import types

SOLUTION = "solution.py"


def describe(error: BaseException, depth: int = 0) -> dict:
    """The error's type, message and the line of the learner's code it came from (if any), and
    the error it was raised while handling (the first one is often the one that explains it)."""
    where = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == SOLUTION:
            where = {"line": frame.lineno, "code": (frame.line or "").strip()}
    if isinstance(error, SyntaxError) and error.filename == SOLUTION:
        where = {"line": error.lineno, "code": (error.text or "").strip()}
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ in ("builtins", "asyncio.exceptions") else \
        f"{kind.__module__}.{kind.__qualname__}"
    message = str(error.args[0]) if getattr(error, "args", None) else str(error)
    described = {"type": name, "message": message.split("\n(Background on this error")[0][:1000], "where": where}
    during = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if during is not None and depth < 2:
        described["during"] = describe(during, depth + 1)
    return described


def load(code: str, context: types.SimpleNamespace) -> None:
    module = types.ModuleType("solution")
    module.__file__ = SOLUTION
    linecache.cache[SOLUTION] = (len(code), None, code.splitlines(True), SOLUTION)
    sys.modules["solution"] = module
    exec(compile(code, SOLUTION, "exec"), module.__dict__)
    context.solution = module


async def serve(requests, answers, ops, context) -> None:
    while True:
        line = requests.readline()  # blocks the loop between requests: nothing of the code runs then
        if not line:
            return
        request = json.loads(line)
        started = time.perf_counter()
        try:
            if request["op"] == "exit":
                return
            if request["op"] == "load":
                value = load(request["code"], context)
            else:
                value = await getattr(ops, request["op"])(context, **request.get("args", {}))
            answer = {"ok": True, "value": value}
        except BaseException as error:  # noqa: BLE001 - SystemExit and the rest: the grader is told
            answer = {"ok": False, "error": describe(error)}
        answer["seconds"] = time.perf_counter() - started
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        try:
            answers.write(json.dumps(answer) + "\n")
        except (TypeError, ValueError) as error:
            answers.write(json.dumps({"ok": False, "error": describe(error)}) + "\n")
        answers.flush()


def main() -> None:
    answers = os.fdopen(os.dup(1), "w")
    requests = os.fdopen(os.dup(0), "r")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)  # the code's prints go to stderr, which the grader keeps (the first few KB)
    sys.stdout.reconfigure(line_buffering=True)
    sys.path[:0] = sys.argv[1:]
    import redis.asyncio  # noqa: F401 - the imports every run pays, before any check's clock
    import sqlalchemy.ext.asyncio  # noqa: F401

    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    init = json.loads(requests.readline())
    ops = importlib.import_module(init["ops"])
    context = types.SimpleNamespace(solution=None, **init)

    async def run() -> None:
        await ops.setup(context)
        try:
            await serve(requests, answers, ops, context)
        finally:
            await ops.teardown(context)

    asyncio.run(run())


if __name__ == "__main__":
    main()
