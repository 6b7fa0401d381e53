"""``make demo``: start the embedded stack, run the lifecycle scenario, print a summary, stop.

The first pipeline named runs the full scenario (``tools.scenario.run_scenario``); any further one
runs the short end-to-end path (ingest, train, gate, promote, score), unless ``--full`` is given.

The demo runs in its own folder, ``state/demo``, emptied first: runs, events and files left by an
earlier demo or by ``make up`` (whose schedules are on) would otherwise be picked up by the scheduler
and change what the scenario sees. Exit code 0 only if every expectation of the scenario held.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from tools.airflow_api import AirflowApi
from tools.stack import ADMIN, Stack


def main() -> int:
    """Run the scenario for the named pipelines; the exit code is 2 if a stack is already running."""
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__)
    parser.add_argument("pipelines", nargs="*", default=["churn"])
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--keep-running", action="store_true", help="leave the stack up afterwards")
    parser.add_argument(
        "--full", action="store_true", help="run the full scenario for every pipeline, not only the first"
    )
    args = parser.parse_args()

    if Stack().running():
        print(
            "The local stack is already running (make up); stop it with `make down` first.", file=sys.stderr
        )
        return 2
    stack = Stack(state=Stack().state / "demo", with_mlflow_ui=args.keep_running, disable_schedules=True)
    if stack.running():
        print("A demo stack is still running; stop it with `python -m tools.stack down`.", file=sys.stderr)
        return 2
    shutil.rmtree(stack.state, ignore_errors=True)
    os.environ.update(stack.env())  # the driver reads the same state folder as the tasks
    from tools.scenario import run_scenario, run_short_path, summary

    started = time.monotonic()
    print(f"Starting Airflow (state in {stack.state}) ...", flush=True)
    outcomes = []
    try:
        stack.up()
        api = AirflowApi(stack.api_url, *ADMIN)
        for i, pipeline in enumerate(args.pipelines):
            run = run_scenario if i == 0 or args.full else run_short_path
            outcomes.append(run(api, pipeline, rows=args.rows))
    finally:
        if not args.keep_running:
            stack.down()
    print(summary(outcomes))
    ok = outcomes and all(not o.failures for o in outcomes)
    print(f"\n{'PASSED' if ok else 'FAILED'} in {time.monotonic() - started:.0f}s")
    if args.keep_running:
        print(f"Airflow UI: {stack.api_url} (login {ADMIN[0]}/{ADMIN[1]}); stop with `make down`")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
