#!/usr/bin/env python3
"""Runs the test suite's jobs side by side and reports each one's time (used by scripts/test).

    scripts/lanes.py LANES CARGO_JSON [--job NAME=COMMAND]... [-- TEST ARGS...]

CARGO_JSON is what `cargo test --no-run --message-format=json` printed: every test binary in it
is a job, run with `--quiet` and TEST ARGS (a name filter). `--job` adds a job run by bash from
the repository root. Up to LANES jobs run at once, the slowest first: jobs named in SLOW start in
that order, the rest after them. Each job's output goes to target/lanes/<name>.log and is
printed in full only when the job fails; every job's time is printed as it ends and again, sorted,
at the end. Exits 1 when any job failed.

Why lanes: `cargo test` runs one test binary after the other, and the suite's slowest binaries
spend most of their time waiting (Slack's one message a second, restarts, settling periods), so a
core sits idle while they run. Running binaries side by side fills it. Each binary still runs its
own tests on two threads and keeps what its tests share (a Prism per API description), which
running every test in a process of its own would lose.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import time

# Measured on the 2-core machines (scripts/test, 2026-12-06: faults 454 s, burst 421 s, fuzz 388 s,
# storm 181 s, attacks 109 s, ...): the jobs that take longest, longest first.
SLOW = ["faults", "search", "burst", "fuzz", "storm", "attacks", "console", "discord", "chat", "restart_order",
        "kubernetes", "gcp", "aws", "slack", "lib", "memory", "teams", "tickets"]


def test_binaries(cargo_json, test_args):
    """(name, command) of every test binary cargo built: `lib`, `bin-<name>`, or the test's name."""
    jobs = []
    with open(cargo_json) as f:
        for line in f:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("reason") != "compiler-artifact" or not message.get("executable"):
                continue
            if not message["profile"]["test"]:
                continue
            target = message["target"]
            kind = target["kind"][0]
            name = "lib" if kind == "lib" else f"bin-{target['name']}" if kind == "bin" \
                else target["name"]
            command = shlex.join([message["executable"], "--quiet", *test_args])
            jobs.append((name, command))
    return jobs


def main():
    args = sys.argv[1:]
    test_args = []
    if "--" in args:
        test_args = args[args.index("--") + 1:]
        args = args[:args.index("--")]
    lanes = int(args[0])
    jobs = test_binaries(args[1], test_args)
    rest = args[2:]
    while rest:
        flag, job = rest[0], rest[1]
        assert flag == "--job", f"unknown argument {flag}"
        name, command = job.split("=", 1)
        jobs.append((name, command))
        rest = rest[2:]
    rank = {name: i for i, name in enumerate(SLOW)}
    jobs.sort(key=lambda job: rank.get(job[0], len(SLOW)))

    logs = os.path.join("target", "lanes")
    os.makedirs(logs, exist_ok=True)
    pending = list(jobs)
    running = {}
    times = []
    failed = []
    start = time.monotonic()
    while pending or running:
        while pending and len(running) < lanes:
            name, command = pending.pop(0)
            log = open(os.path.join(logs, name + ".log"), "w")
            process = subprocess.Popen(["bash", "-c", command], stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            running[process.pid] = (name, process, log, time.monotonic())
        pid, status = os.wait()
        if pid not in running:
            continue
        name, process, log, began = running.pop(pid)
        log.close()
        took = time.monotonic() - began
        code = os.waitstatus_to_exitcode(status)
        times.append((took, name, code))
        print(f"{'ok' if code == 0 else 'FAILED'}: {name} in {took:.0f} s "
              f"({time.monotonic() - start:.0f} s in)", flush=True)
        if code != 0:
            failed.append(name)
            with open(os.path.join(logs, name + ".log")) as out:
                sys.stdout.write(out.read())
            sys.stdout.flush()

    counts = {"passed": 0, "failed": 0, "ignored": 0}
    for name, _ in jobs:
        with open(os.path.join(logs, name + ".log")) as out:
            for found in re.finditer(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored",
                                     out.read(), re.MULTILINE):
                for key, number in zip(counts, found.groups()):
                    counts[key] += int(number)
    print(f"\n== {len(jobs)} jobs in {time.monotonic() - start:.0f} s on {lanes} lanes: "
          f"{counts['passed']} tests passed, {counts['failed']} failed, {counts['ignored']} ignored; "
          "each job's time:")
    for took, name, code in sorted(times, reverse=True):
        print(f"{took:7.0f} s  {name}{'  FAILED' if code else ''}")
    if failed:
        print("failed: " + " ".join(failed) + " (logs in target/lanes/)")
        sys.exit(1)


if __name__ == "__main__":
    main()
