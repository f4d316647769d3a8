"""kubectl aicenter: the GPU centres, the queue, one job's wait and the quotas, from the operator.

    kubectl aicenter status [--center C] [--no-topology]
    kubectl aicenter queue [--quota Q] [--center C] [-n NAMESPACE]
    kubectl aicenter why NAMESPACE/JOB
    kubectl aicenter top quotas [--center C]
    kubectl aicenter dashboard [--port 8765]

The data comes from the operator's read-only visibility API, through the API server's service proxy
(the operator's metrics Service is found by its label app.kubernetes.io/name=aicenter-operator; the
caller needs "get" on services/proxy for it) or, with --endpoint URL, from the operator's HTTP port.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import views
from .source import PluginError, Source, close, connect


def _common(p: argparse.ArgumentParser, output: bool = True) -> None:
    g = p.add_argument_group("where the operator is")
    g.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    g.add_argument("--context", default=None, help="kubeconfig context")
    g.add_argument(
        "--endpoint",
        default=os.environ.get("AICENTER_ENDPOINT") or None,
        metavar="URL",
        help="the operator's HTTP port (e.g. http://127.0.0.1:8080 after kubectl port-forward) instead of "
        "the API server's service proxy [AICENTER_ENDPOINT]",
    )
    g.add_argument(
        "--token-file",
        default=os.environ.get("AICENTER_TOKEN_FILE") or None,
        metavar="FILE",
        help="with --endpoint: a file holding a bearer token for an operator run with --metrics-auth "
        "(e.g. from kubectl create token) [AICENTER_TOKEN_FILE]",
    )
    g.add_argument(
        "--operator-namespace",
        default=os.environ.get("AICENTER_OPERATOR_NAMESPACE") or None,
        metavar="NS",
        help="namespace of the operator's metrics Service (default: search all namespaces by label) "
        "[AICENTER_OPERATOR_NAMESPACE]",
    )
    g.add_argument(
        "--operator-service",
        default=os.environ.get("AICENTER_OPERATOR_SERVICE") or None,
        metavar="NAME",
        help="name of the operator's metrics Service (with --operator-namespace)",
    )
    if output:
        p.add_argument("-o", "--output", choices=["text", "json"], default="text", help="output format")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="kubectl aicenter",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Docs: docs/admin.md of the aicenter-operator repository.",
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "status", help="per centre and class: GPUs total, allocated, free, unhealthy; racks, cliques"
    )
    p.add_argument("--center", help="only this AICenter")
    p.add_argument("--no-topology", action="store_true", help="leave out the racks and NVLink cliques")
    _common(p)

    p = sub.add_parser("queue", help="pending work in the order the scheduler considers it")
    p.add_argument("--quota", help="only this GPUQuota's work")
    p.add_argument("--center", help="only this AICenter's work")
    p.add_argument("-n", "--namespace", help="only jobs in this namespace")
    _common(p)

    p = sub.add_parser("why", help="why a GPUJob waits (or where it runs)")
    p.add_argument("job", metavar="NAMESPACE/JOB", help="the GPUJob (or JOB with -n)")
    p.add_argument("-n", "--namespace", help="the GPUJob's namespace")
    _common(p)

    p = sub.add_parser("top", help="top quotas: used vs guaranteed vs limit, borrowed and lent")
    p.add_argument("what", choices=["quotas"], help="what to show")
    p.add_argument("--center", help="only this AICenter's quotas")
    _common(p)

    p = sub.add_parser("dashboard", help="serve a live web page of the centres, quotas and queue")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0: any free)")
    p.add_argument("--refresh", type=float, default=5.0, help="seconds between the page's updates")
    _common(p, output=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        source = connect(
            endpoint=args.endpoint,
            kubeconfig=args.kubeconfig,
            context=args.context,
            namespace=args.operator_namespace,
            service=args.operator_service,
            token=_read_token(args.token_file),
        )
    except PluginError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        if args.command == "dashboard":
            from .dashboard import serve

            return serve(source, args.address, args.port, args.refresh)
        doc, text = run(args, source)
        if args.output == "json":
            json.dump(doc, sys.stdout, indent=2, sort_keys=False)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(text + "\n")
        return 0
    except PluginError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `kubectl aicenter queue | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        close(source)


def run(args: argparse.Namespace, source: Source) -> tuple[Any, str]:
    """(the JSON document, the text) of one command."""
    if args.command == "status":
        doc = source.get("centers", {"center": args.center} if args.center else None)
        if args.center and not doc.get("centers"):
            raise PluginError(f"the operator knows no AICenter {args.center!r}")
        return doc, views.status_text(doc, topology=not args.no_topology)
    if args.command == "queue":
        query = {k: v for k, v in (("quota", args.quota), ("center", args.center)) if v}
        doc = source.get("queue", query)
        if args.namespace:
            doc = {
                **doc,
                "pending": [e for e in doc.get("pending") or [] if e["namespace"] == args.namespace],
            }
        return doc, views.queue_text(doc, source.get("quotas"))
    if args.command == "why":
        ns, name = _job_ref(args.job, args.namespace)
        job = source.get("job", {"namespace": ns, "name": name})
        quotas = source.get("quotas")
        centers = source.get("centers", {"center": job["center"]}) if job.get("center") else None
        total = len(source.get("queue").get("pending") or []) if job.get("queue") else 0
        doc = {"job": job, "quota": views.find(quotas, "quotas", job.get("quota"))}
        if centers:
            doc["center"] = views.find(centers, "centers", job.get("center"))
        return doc, views.why_text(job, quotas, centers, total)
    if args.command == "top":
        doc = source.get("quotas")
        if args.center:
            doc = {**doc, "quotas": [q for q in doc.get("quotas") or [] if q.get("center") == args.center]}
        return doc, views.quotas_text(doc)
    raise PluginError(f"unknown command {args.command}")


def _read_token(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError as e:
        raise PluginError(f"--token-file {path}: {e.strerror}") from None


def _job_ref(ref: str, namespace: str | None) -> tuple[str, str]:
    if "/" in ref:
        ns, _, name = ref.partition("/")
        if namespace and namespace != ns:
            raise PluginError(f"{ref} names namespace {ns}, -n says {namespace}")
    else:
        ns, name = namespace or "", ref
    if not ns or not name:
        raise PluginError(f"name the job as NAMESPACE/JOB (or JOB -n NAMESPACE), not {ref!r}")
    return ns, name


if __name__ == "__main__":
    raise SystemExit(main())
