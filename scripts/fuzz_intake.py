"""A longer fuzz campaign of the instance checks than the test run allows (not part of the tests).

Mutates valid MG and US instances (random byte flips, cuts, random bodies, splices of two
instances) and feeds each to ``inspect_instance`` exactly as the listener does with a spooled
C-STORE. Every input must end in a refusal with one of the specific statuses, or in a coherent
accept (the mutation hit only bytes nobody reads); anything else (an exception that is not an
``InstanceProblem``, an unknown status, a refusal without a reason) is a crash and is saved under
``--out`` for a regression test.

    python scripts/fuzz_intake.py --seconds 300 --out /tmp/fuzz-crashes
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cds.intake.instance_check import InstanceProblem, inspect_instance  # noqa: E402
from tests.unit.intake.mutations import Mutant, valid_file, write_mutant  # noqa: E402

KNOWN = {0xC000, 0xC001, 0xC002, 0xC003, 0xC004, 0xC006, 0xC007, 0xC008, 0xC009, 0xC00A, 0xA900}


def mutate(rng: random.Random, base: list[Mutant]) -> tuple[str, Mutant]:
    m = rng.choice(base)
    body = bytearray(m.body)
    kind = rng.choice(["flip", "cut", "random", "splice", "flip+cut"])
    if kind in ("flip", "flip+cut"):
        for _ in range(rng.randint(1, 16)):
            body[rng.randrange(len(body))] = rng.getrandbits(8)
    if kind in ("cut", "flip+cut"):
        body = body[: rng.randrange(1, len(body))]
    if kind == "random":
        body = bytearray(rng.randbytes(rng.randint(0, 4096)))
    if kind == "splice":
        other = rng.choice(base).body
        at = rng.randrange(len(body))
        body = body[:at] + other[rng.randrange(len(other)):]
    return kind, Mutant(name=kind, sop_class=m.sop_class, sop_uid=m.sop_uid, ts=m.ts, body=bytes(body))


def campaign(seconds: float, seed: int, out: Path) -> int:
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="fuzz-intake-"))
    base = [valid_file(kind, work / f"v{kind}{s}.dcm", seed=s)[0] for kind in ("MG", "US") for s in range(3)]
    counts: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[str] = collections.Counter()
    crashes = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kind, m = mutate(rng, base)
        counts[kind] += 1
        path = write_mutant(m, work / "in.dcm")
        try:
            inspect_instance(path, command_sop_class=m.sop_class, command_sop_instance=m.sop_uid)
            statuses["accepted"] += 1
        except InstanceProblem as problem:
            if problem.status not in KNOWN or not problem.reason:
                raise AssertionError(f"status 0x{problem.status:04X} reason {problem.reason!r}") from problem
            statuses[f"0x{problem.status:04X}"] += 1
        except Exception:  # a crash: keep the input
            crashes += 1
            out.mkdir(parents=True, exist_ok=True)
            (out / f"crash-{crashes:04d}.dcm").write_bytes(path.read_bytes())
            (out / f"crash-{crashes:04d}.txt").write_text(traceback.format_exc())
    total = sum(counts.values())
    print(f"inputs tried: {total} in {seconds:.0f} s ({total / seconds:.0f}/s); by mutation: {dict(counts)}")
    print(f"outcomes: {dict(statuses)}")
    print(f"crashes: {crashes}" + (f" (inputs and tracebacks in {out})" if crashes else ""))
    return 1 if crashes else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "fuzz-intake-crashes")
    args = ap.parse_args()
    return campaign(args.seconds, args.seed, args.out)


if __name__ == "__main__":
    sys.exit(main())
