"""Run the chaos suite on real processes: ``python tests/chaos/run.py --duration 600 --seed 1``.

Starts a 4-validator devnet (one ``ledger node`` process each) behind fault-injecting proxies,
anchors under a steady load while a seeded nemesis kills, pauses, partitions, slows, drops,
duplicates and skews one node at a time, then heals, settles and checks every acknowledged
anchor, checkpoint, consistency proof, block and signature (see ``tests/chaos/harness.py`` and
``docs/chaos.md``). Prints the counts; exits 0 only with 0 lost anchors and 0 violations.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for `chaos.*`

from chaos.harness import ChaosOptions, run_chaos, write_json


def _interval(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0,
                        help="seconds of faults (default 600)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the nemesis and the load")
    parser.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--hold", type=_interval, default=(2.0, 8.0),
                        help="seconds one fault lasts, LOW,HIGH (default 2,8)")
    parser.add_argument("--gap", type=_interval, default=(1.0, 4.0),
                        help="seconds between faults, LOW,HIGH (default 1,4)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="directory for the devnet and node logs (kept)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary work directory even on success")
    parser.add_argument("--no-snapshot", action="store_true",
                        help="run the nodes from the work tree instead of a copy of ledger/ "
                        "taken at the start")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    args = parser.parse_args(argv)

    # SIGTERM/SIGHUP end the run through SystemExit, so that atexit kills the node processes.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    options = ChaosOptions(
        duration=args.duration, seed=args.seed, clients=args.clients, hold=args.hold,
        gap=args.gap, workdir=args.workdir, keep=args.keep, snapshot=not args.no_snapshot,
        log=lambda line: print(line, flush=True),
    )
    report = run_chaos(options)
    print(report.format(), flush=True)
    if args.json is not None:
        write_json(report, args.json)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
