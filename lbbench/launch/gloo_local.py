"""One-node Gloo launch with Horovod's own rendezvous server, without horovodrun.

    python -m lbbench.launch.gloo_local NP COMMAND...

Why not `horovodrun --gloo`: before launching, horovodrun verifies that Horovod was built with
Gloo by importing its extensions in order - TensorFlow first - which costs ~8 s per run here
(horovod.common.util.gloo_built), more than a small run itself. This module does what
horovodrun's gloo_run does for localhost (RendezvousServer, host assignment, the
HOROVOD_* slot variables), so the workers are the same Horovod Gloo processes.
`--launcher horovodrun` keeps the stock tool.

Like horovodrun: output lines are prefixed "[rank]<stdout>:", and when one worker exits
non-zero the others are terminated and that status is returned.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO


def _pump(stream: IO[bytes], rank: int) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.buffer.write(f"[{rank}]<stdout>:".encode() + line)
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
    from horovod.runner.gloo_run import create_slot_env_vars
    from horovod.runner.http.http_server import RendezvousServer

    np_, command = int(argv[0]), argv[1:]
    plan = get_host_assignments(parse_hosts(f"localhost:{np_}"), np_)
    server = RendezvousServer(verbose=0)
    port = server.start()
    server.init(plan)
    base = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": "127.0.0.1",
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_IFACE": "lo",
        "NCCL_SOCKET_IFNAME": "lo",
    }
    procs = []
    # The workers stay in this launcher's process group: a signal to the group (what `lbbench run`
    # sends to stop a cell) reaches every worker even if this launcher is killed outright.
    for slot in plan:
        p = subprocess.Popen(
            command,
            env={**base, **create_slot_env_vars(slot)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=_pump, args=(p.stdout, slot.rank), daemon=True).start()
        procs.append(p)

    def stop(sig: int = signal.SIGTERM) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)

    def stop_and_exit(signum: int, frame: object) -> None:
        stop()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        sys.exit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, stop_and_exit)
    status = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed:
                status = exit_status(failed[0].returncode)
                rank = procs.index(failed[0])
                print(f"lbbench: rank {rank} {describe_exit(failed[0].returncode)}; stopping the others", flush=True)
                stop()
                break
            time.sleep(0.2)
        for p in procs:
            p.wait()
        status = status or next((exit_status(p.returncode) for p in procs if p.returncode), 0)
    finally:
        stop()
        server.stop()
    return status


def exit_status(rc: int) -> int:
    """A worker's Popen return code as a shell would report it: 128 + N for signal N."""
    return 128 - rc if rc < 0 else rc


def describe_exit(rc: int) -> str:
    if rc < 0:
        return f"was killed by {signal.Signals(-rc).name}"
    return f"exited with status {rc}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
