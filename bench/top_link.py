"""omg top over a slow link: how long one refresh of the view takes, and what the view costs on
the wire, through a proxy that adds a one-way latency (0, 50, 150 ms), with a model loaded.
Compares the view's refresh (its reads sent together) with the same four reads one after another.

    python bench/top_link.py [--refreshes 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ohmygpu.api.v1 import jobs_pb2, runs_pb2, runs_pb2_grpc, system_pb2  # noqa: E402
from ohmygpu.cli.client import Client  # noqa: E402
from ohmygpu.cli.top import Top  # noqa: E402
from ohmygpu.core.settings import Settings  # noqa: E402

from tests.fakes.slowlink import SlowLink  # noqa: E402
from tests.helpers import new_daemon, smollm2_path  # noqa: E402


def sequential_refresh(c: Client) -> None:
    md = c.metadata
    c.system.ListDevices(system_pb2.ListDevicesRequest(), timeout=10, metadata=md)
    c.system.ListLoaded(system_pb2.ListLoadedRequest(), timeout=10, metadata=md)
    c.jobs.ListJobs(jobs_pb2.ListJobsRequest(), timeout=10, metadata=md)
    runs_pb2_grpc.RunServiceStub(c.channel).ListRuns(runs_pb2.ListRunsRequest(), timeout=10, metadata=md)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--refreshes", type=int, default=10)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = new_daemon(Path(tmp)).start()
        try:
            d.omg("model", "add", str(smollm2_path()), "--name", "smol")
            httpx.post(f"{d.http}/api/generate", json={"model": "smol", "prompt": "", "keep_alive": -1}, timeout=120)
            print(f"{'one-way latency':>16} {'view refresh':>13} {'4 reads in turn':>16} {'bytes/refresh':>14}")
            for latency in (0.0, 0.05, 0.15):
                with SlowLink(d.grpc_port, latency_s=latency) as link:
                    settings = Settings.load(overrides={"grpc_addr": f"127.0.0.1:{link.port}"},
                                             environ={"OMG_HOME": str(d.home)})
                    client = Client(settings)
                    top = Top(client)
                    top.refresh()  # connect and warm up
                    before = link.stats.upstream_bytes + link.stats.downstream_bytes
                    together = []
                    for _ in range(args.refreshes):
                        top.refresh()
                        assert not top.snap.error, top.snap.error
                        together.append(top.snap.refresh_s)
                    per_refresh = (link.stats.upstream_bytes + link.stats.downstream_bytes - before) / args.refreshes
                    in_turn = []
                    for _ in range(args.refreshes):
                        started = time.monotonic()
                        sequential_refresh(client)
                        in_turn.append(time.monotonic() - started)
                    client.close()
                print(f"{latency * 1000:>13.0f} ms {statistics.median(together) * 1000:>10.0f} ms "
                      f"{statistics.median(in_turn) * 1000:>13.0f} ms {per_refresh:>14.0f}")
            print("(omg top refreshes every --interval seconds, default 1, and when an event arrives)")
        finally:
            d.stop()


if __name__ == "__main__":
    main()
