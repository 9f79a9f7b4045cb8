"""How the engine's process uses the CPU: the thread policy the `lowkey` command and the daemon
apply before torch is imported.

torch's OpenMP threads spin while they wait for work. On a machine whose cores are busy with other
programs (a laptop building, a browser with many tabs) the spinning threads fight those programs
and each other, and an attack that takes 5 s on a quiet machine took 60-96 s. With the passive
wait policy a waiting thread sleeps instead. `benchmarks/thread_policy.py` measures the policies
on a quiet and on a busy machine (results in benchmarks/README.md).

Environment variables the user set win: the policy only fills in what is unset.
"""

from __future__ import annotations

import os

#: What the engine's processes set when the user has not: OpenMP threads sleep while they wait.
THREAD_POLICY_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def apply_thread_policy(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Fill in THREAD_POLICY_ENV where unset. Must run before torch is imported (OpenMP reads
    these once, when it starts). Returns what was set."""
    environ = os.environ if environ is None else environ
    applied = {}
    for name, value in THREAD_POLICY_ENV.items():
        if name not in environ:
            environ[name] = value
            applied[name] = value
    return applied
