"""``python -m aicenter_testbed.kind e2e|docker|images|create|delete`` (hack/kind/e2e.sh runs e2e)."""

from __future__ import annotations

import argparse

from aicenter_testbed.kind.cluster import create_cluster, delete_cluster, load_images
from aicenter_testbed.kind.docker import ensure_docker
from aicenter_testbed.kind.e2e import e2e
from aicenter_testbed.kind.images import WORKLOAD_IMAGE, ensure_images
from aicenter_testbed.kind.kindtool import ensure_kind
from aicenter_testbed.kind.node import ensure_node_image


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m aicenter_testbed.kind",
        description="The kind test bed: offline images, a 1+2 node cluster, the kind e2e (docs/kind.md).",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("docker", help="install docker.io and start dockerd when needed")
    p = sub.add_parser(
        "images", help="build the node, operator, device plugin and workload images when their inputs changed"
    )
    p.add_argument("--force", action="store_true", help="rebuild them all")
    sub.add_parser("create", help="create the cluster and load the images; prints the kubeconfig path")
    sub.add_parser("delete", help="delete the cluster")
    p = sub.add_parser("e2e", help="build, create, test, delete; prints RAN/PASSED or SKIPPED and why")
    p.add_argument("--keep", action="store_true", help="keep the cluster afterwards")
    p.add_argument("--require", action="store_true", help="exit 1 when the e2e cannot run (SKIPPED)")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)
    if args.cmd == "e2e":
        return e2e(args.pytest_args, keep=args.keep, require=args.require)
    if args.cmd == "delete":
        delete_cluster()
        return 0
    ensure_docker(probe_image=WORKLOAD_IMAGE)
    if args.cmd == "docker":
        return 0
    ensure_kind()
    ensure_node_image(force=getattr(args, "force", False))
    images = ensure_images(force=getattr(args, "force", False))
    if args.cmd == "create":
        kubeconfig = create_cluster()
        load_images(images)
        print(kubeconfig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
