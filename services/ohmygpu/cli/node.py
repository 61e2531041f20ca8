"""`omg node join ADDR`: lend this machine to a daemon; `omg node ls`: the daemon's machines."""

from __future__ import annotations

import argparse
import time

from ohmygpu.api.v1 import system_pb2
from ohmygpu.cli.client import Client
from ohmygpu.cli.format import print_json, size, table
from ohmygpu.core.settings import Settings


def cmd_node(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "join":
        return _join(args, settings)
    client = Client(settings)
    resp: system_pb2.ListNodesResponse = client.call(client.system.ListNodes, system_pb2.ListNodesRequest())
    if args.json:
        print_json(resp)
        return 0
    rows = []
    for n in resp.nodes:
        devices = f"{n.cpu_count} CPU" + "".join(f", {g.name} {size(g.memory_total)}" for g in n.gpus)
        beat = "-" if not n.last_heartbeat.seconds else f"{max(0.0, time.time() - n.last_heartbeat.ToNanoseconds() / 1e9):.1f}s ago"
        free = max(0, n.ram_budget - n.ram_used)
        labels = ",".join(f"{k}={v}" for k, v in sorted(n.labels.items()))
        rows.append([n.name, n.state, n.address or "(this machine)", devices, size(free), str(len(n.models)),
                     ",".join(n.loaded) or "-", beat, labels or "-"])
    table(rows, ["NAME", "STATE", "ADDRESS", "DEVICES", "FREE", "MODELS", "LOADED", "HEARTBEAT", "LABELS"])
    if resp.join_address:
        print(f"\nnodes join on {resp.join_address}: omg node join <this host>:{resp.join_address.rsplit(':', 1)[1]} "
              f"--token <OMG_NODE_TOKEN> --fingerprint {resp.join_fingerprint}")
    return 0


def _join(args: argparse.Namespace, settings: Settings) -> int:
    from ohmygpu.agent.node import join

    overrides = {"node_token": args.node_token, "node_name": args.name, "node_listen": args.listen,
                 "node_advertise": args.advertise, "node_fingerprint": args.fingerprint, "node_ca": args.ca,
                 "node_hub": args.hub, "node_labels": ",".join(args.label) if args.label else None,
                 "home": args.home}
    settings = Settings.load(overrides=overrides)
    address = args.address or settings.node_join
    if not address:
        print("omg node join: give the daemon's node address (host:port, or OMG_NODE_JOIN)")
        return 2
    return join(settings, address)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    n = sub.add_parser("node", help="nodes: join this machine to a daemon (node join ADDR), list them (node ls)")
    nsub = n.add_subparsers(dest="action", required=True)
    j = nsub.add_parser("join", help="run the node agent: lend this machine's devices to the daemon at ADDR")
    j.add_argument("address", nargs="?", help="the daemon's node address host:port (OMG_NODE_JOIN)")
    j.add_argument("--token", dest="node_token", help="the daemon's join token (OMG_NODE_TOKEN)")
    j.add_argument("--name", help="this node's name (OMG_NODE_NAME; default: the host name)")
    j.add_argument("--listen", help="the agent's address for the daemon (OMG_NODE_LISTEN, default 0.0.0.0:11437)")
    j.add_argument("--advertise", help="the address the daemon dials (OMG_NODE_ADVERTISE)")
    j.add_argument("--label", action="append", help="a label k=v (repeatable; OMG_NODE_LABELS)")
    j.add_argument("--fingerprint", help="the daemon's certificate fingerprint sha256:... (OMG_NODE_FINGERPRINT)")
    j.add_argument("--ca", help="the daemon's certificate file instead of a fingerprint (OMG_NODE_CA)")
    j.add_argument("--hub", choices=["on", "off", "auto"], help="pull from the hub itself (OMG_NODE_HUB)")
    for name in ("ls", "list"):
        ls = nsub.add_parser(name, help="the daemon's machines: state, devices, free memory, models")
        ls.add_argument("--json", action="store_true", help="machine-readable output")
    n.set_defaults(func=cmd_node)
