"""``aicenter-operator``: run the operator, or print its CRDs."""

from __future__ import annotations

import argparse
import asyncio
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="aicenter-operator", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator against the current kubeconfig or in-cluster config")
    from aicenter.controller.config import add_arguments, from_args

    add_arguments(run)
    sub.add_parser("crds", help="print the CustomResourceDefinitions (YAML)")
    args = ap.parse_args(argv)
    if args.command == "crds":
        import yaml

        from aicenter.api.crds import all_crds

        sys.stdout.write(yaml.safe_dump_all(all_crds(), sort_keys=False, explicit_start=True))
        return 0
    from aicenter.controller.main import amain, setup_logging

    settings = from_args(args)
    setup_logging(settings)
    try:
        return asyncio.run(amain(settings))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
