"""The first program of every sandboxed run (standard library only, run with `python -I -S`):
join the run's cgroups, set the limits, lower the priority, then become the sandbox (exec), so
that everything the run starts is inside them from its first instruction.

    python -I -S launch.py '<json: cgroups, rlimits, nice, argv>'
"""

import json
import os
import sys


def main() -> None:
    plan = json.loads(sys.argv[1])
    for procs in plan["cgroups"]:  # cgroup.procs files of the run's cgroups
        with open(procs, "w") as handle:
            handle.write(str(os.getpid()))
    try:
        import resource
    except ImportError:  # Windows: no rlimits
        resource = None
    for name, value in plan["rlimits"].items() if resource else ():
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (AttributeError, ValueError, OSError):  # a limit this platform does not take
            print(f"launch: {name} could not be set on this platform", file=sys.stderr)
    os.nice(plan["nice"])
    os.execv(plan["argv"][0], plan["argv"])


if __name__ == "__main__":
    main()
