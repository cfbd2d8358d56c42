"""The `cutover` command. Each subcommand imports its component lazily, so `cutover crds`
needs neither kopf nor the serving stack."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from cutover.api.contract import GATEWAY_GRPC_PORT, GATEWAY_PORT, SERVING_GRPC_PORT, SERVING_PORT


def _crds(args: argparse.Namespace) -> int:
    from cutover.api import crd

    if args.stdout:
        sys.stdout.write("---\n".join(crd.render(kind) for kind in crd.KINDS))
        return 0
    for path in crd.write(Path(args.output)):
        print(f"wrote {path}")
    return 0


def _operator(args: argparse.Namespace) -> int:

    from cutover.operator.leader import LeaseSettings
    from cutover.operator.lifecycle import Shard
    from cutover.operator.main import run

    _logging(args.verbose)
    if args.default_shard and not args.shard:
        print("cutover operator: --default-shard needs --shard NAME", file=sys.stderr)
        return 2
    try:
        leader_election = (
            LeaseSettings(
                name=args.leader_elect_resource_name,
                namespace=args.leader_elect_resource_namespace,
                lease_duration=args.leader_elect_lease_duration,
                renew_deadline=args.leader_elect_renew_deadline,
                retry_period=args.leader_elect_retry_period,
            )
            if args.leader_elect
            else None
        )
    except ValueError as error:  # settings that cannot work: a usage error, not a crash loop
        print(f"cutover operator: {error}", file=sys.stderr)
        return 2
    run(
        namespaces=args.namespace,
        verdicts_from=args.verdicts_from,
        metrics_port=args.metrics_port or None,
        serving_otlp_endpoint=args.serving_otlp_endpoint,
        serving_ingress=args.serving_network_policy,
        leader_election=leader_election,
        shard=Shard(args.shard, default=args.default_shard) if args.shard else None,
    )
    return 0


def _logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


def _run_fast(main: Coroutine[Any, Any, None]) -> None:
    """The request-path processes run on uvloop: a third less event-loop time per request, which
    is most of what a proxy or a small model's server spends (benchmarks/gateway.py)."""
    import asyncio

    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _serve(args: argparse.Namespace) -> int:
    from pydantic import TypeAdapter

    from cutover.api.v1alpha1.modeldeployment import (
        Batching,
        FallbackSpec,
        OutOfDistribution,
        PredictionCache,
        TensorSpec,
    )
    from cutover.serving.grpc_threads import use_poll_io

    use_poll_io()  # before grpc's first import
    from cutover.serving.server import ServeConfig, serve

    _logging(args.verbose)
    try:
        tensors = TypeAdapter(list[TensorSpec])
        config = ServeConfig(
            name=args.name,
            version=args.version,
            format=args.format,
            revision=args.revision,
            namespace=args.namespace,
            host=args.host,
            port=args.port,
            grpc_port=args.grpc_port,
            model_uri=args.model_uri,
            checksum=args.checksum,
            upstream=args.upstream,
            upstream_model=args.upstream_model,
            upstream_api_key=os.environ.get("CUTOVER_UPSTREAM_API_KEY"),
            upstream_timeout=args.upstream_timeout,
            inputs=tensors.validate_json(args.inputs) if args.inputs else (),
            outputs=tensors.validate_json(args.outputs) if args.outputs else (),
            batching=Batching(
                max_batch_size=args.max_batch_size,
                max_queue_delay=args.max_queue_delay,
                max_queue_size=args.max_queue_size,
            )
            if args.max_batch_size
            else None,
            prediction_cache=PredictionCache(
                max_entries=args.prediction_cache_entries,
                max_bytes=args.prediction_cache_bytes,
                ttl=args.prediction_cache_ttl,
            )
            if args.prediction_cache_entries
            else None,
            out_of_distribution=OutOfDistribution.model_validate_json(args.ood) if args.ood else None,
            fallback=FallbackSpec.model_validate_json(args.fallback) if args.fallback else None,
            previous_url=args.previous_url,
            confidence_output=args.confidence_output,
            audit_log=args.audit_log,
            max_in_flight=args.max_in_flight,
            max_request_bytes=args.max_request_bytes,
            threads=args.threads,
            device=args.device,
            cache_dir=args.cache_dir,
            shutdown_delay=args.shutdown_delay,
            shutdown_grace=args.shutdown_grace,
            safety_policy=args.safety_policy,
            safety_secrets_dir=args.safety_secrets_dir,
            safety_max_characters=args.safety_max_characters,
            otlp_endpoint=args.otlp_endpoint,
            explain_max_in_flight=args.explain_max_in_flight,
            explain_timeout=args.explain_timeout,
            explain_background=args.explain_background,
            explain_sample_rate=args.explain_sample_rate,
        )
    except ValueError as error:  # pydantic's ValidationError is one
        print(f"cutover serve: {error}", file=sys.stderr)
        return 2
    _run_fast(serve(config))
    return 0


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="serve one model revision over the Open Inference Protocol v2")
    model = serve.add_argument_group("model")
    model.add_argument("--name", required=True, help="model name: the endpoint /v2/models/NAME")
    model.add_argument("--version", required=True, help="model version reported in metadata")
    model.add_argument("--format", required=True, choices=["onnx", "pytorch", "tensorflow", "triton", "llm"])
    model.add_argument("--model-uri", help="model file or SavedModel folder: path, file://, http(s):// + --checksum")
    model.add_argument("--checksum", help="sha256:<hex> the model file must have")
    model.add_argument("--upstream", help="triton and llm: the upstream server URL")
    model.add_argument("--upstream-model", help="triton and llm: the model name at the upstream")
    model.add_argument("--upstream-timeout", type=float, default=30.0, help="seconds (default 30)")
    model.add_argument("--inputs", help="declared inputs: JSON list of {name, datatype, shape, range}")
    model.add_argument("--outputs", help="declared outputs: JSON list of {name, datatype, shape, range}")
    model.add_argument(
        "--ood", help="out-of-distribution scoring: JSON {statisticsUri, input, threshold[, method, modelUri]}"
    )
    model.add_argument("--fallback", help="fallback chain: JSON of spec.fallback")
    model.add_argument("--previous-url", help="the previous version's endpoint, first link of the fallback chain")
    model.add_argument("--confidence-output", help="output whose top class is the confidence (default: the first)")
    labels = serve.add_argument_group("metric labels")
    labels.add_argument("--revision", default="local", help="revision label (default local)")
    labels.add_argument("--namespace", default="default", help="namespace label (default default)")
    batching = serve.add_argument_group("dynamic batching (off unless --max-batch-size is given)")
    batching.add_argument("--max-batch-size", type=int, default=0)
    batching.add_argument("--max-queue-delay", default="2ms", help="e.g. 2ms (default 2ms)")
    batching.add_argument("--max-queue-size", type=int, default=256, help="queued requests before 503 (default 256)")
    cache = serve.add_argument_group("prediction cache (off unless --prediction-cache-entries is given)")
    cache.add_argument("--prediction-cache-entries", type=int, default=0, help="most answers kept")
    cache.add_argument("--prediction-cache-bytes", type=int, default=64 << 20, help="most bytes kept (default 64 MiB)")
    cache.add_argument("--prediction-cache-ttl", help="e.g. 5m: how long an answer may be reused (default: no limit)")
    server = serve.add_argument_group("server")
    server.add_argument("--host", default="0.0.0.0")
    server.add_argument("--port", type=int, default=SERVING_PORT, help="0 picks a free port (logged)")
    server.add_argument(
        "--grpc-port", type=int, help=f"serve gRPC too, on this port (0 picks one, logged; in pods {SERVING_GRPC_PORT})"
    )
    server.add_argument("--max-in-flight", type=int, default=1024, help="requests in progress before 503")
    server.add_argument("--max-request-bytes", type=int, default=64 << 20, help="larger bodies get 413")
    server.add_argument("--threads", type=int, default=0, help="model runtime intra-op threads (0: its default)")
    server.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto uses a GPU when present")
    server.add_argument("--audit-log", type=Path, help="write one JSON line per prediction here (rotated)")
    server.add_argument("--cache-dir", type=Path, default=Path("/tmp/cutover-models"), help="downloaded models")
    server.add_argument("--shutdown-delay", type=float, default=0.0, help="seconds not-ready before closing")
    server.add_argument("--shutdown-grace", type=float, default=30.0, help="seconds for in-flight requests")
    explain = serve.add_argument_group("explanations (POST .../explain, off the hot path)")
    explain.add_argument("--explain-max-in-flight", type=int, default=1, help="at once, then 503 (0: off; default 1)")
    explain.add_argument("--explain-timeout", type=float, default=2.0, help="seconds each may take (default 2)")
    explain.add_argument("--explain-background", type=int, default=50, help="background rows sampled (default 50)")
    explain.add_argument(
        "--explain-sample-rate",
        type=float,
        default=0.0,
        help="fraction of answered rows explained in the background for attribution shift (default 0: none)",
    )
    safety = serve.add_argument_group("safety (SafetyPolicy filters)")
    safety.add_argument(
        "--safety-policy",
        type=Path,
        help="SafetyPolicy JSON file, followed while serving; nothing is answered until it is valid",
    )
    safety.add_argument(
        "--safety-secrets-dir", type=Path, help="directory holding escalation-url (the crisis webhook from a Secret)"
    )
    safety.add_argument(
        "--safety-max-characters",
        type=int,
        default=1_000_000,
        help="most characters of text screened per request and direction; longer inputs get 400 (default 1000000)",
    )
    _add_otlp(serve)
    serve.add_argument("-v", "--verbose", action="store_true")
    serve.set_defaults(run=_serve)


def _gateway(args: argparse.Namespace) -> int:
    import yaml

    from cutover.serving.grpc_threads import use_poll_io

    use_poll_io()  # before grpc's first import
    from cutover.serving.gateway.app import GatewayConfig
    from cutover.serving.gateway.keys import DEFAULT_TIERS, tiers_from
    from cutover.serving.gateway.main import run

    _logging(args.verbose)
    tiers = tiers_from(yaml.safe_load(args.tiers.read_text()) or {}) if args.tiers else dict(DEFAULT_TIERS)
    config = GatewayConfig(
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        retries=args.retries,
        backend_timeout=args.backend_timeout,
        max_in_flight=args.max_in_flight,
        breaker_failures=args.breaker_failures,
        breaker_open_seconds=args.breaker_open_seconds,
        auth=not args.no_auth,
        tiers=tiers,
        shutdown_delay=args.shutdown_delay,
        shutdown_grace=args.shutdown_grace,
        otlp_endpoint=args.otlp_endpoint,
    )
    if args.feedback_window is not None:
        config.feedback_window = args.feedback_window
    if args.feedback_max_answers is not None:
        config.feedback_max_answers = args.feedback_max_answers
    _run_fast(run(config, namespaces=args.namespace, kubeconfig=args.kubeconfig, backends=args.backends))
    return 0


def _gateway_key(args: argparse.Namespace) -> int:
    import yaml

    from cutover.serving.gateway.keys import new_key, secret_manifest

    key = new_key()
    print(f"API key for {args.name} ({args.tier}); shown once, store it now: {key}", file=sys.stderr)
    sys.stdout.write(
        yaml.safe_dump(
            secret_manifest(args.name, args.namespace, key, args.tier, args.owner, args.models), sort_keys=False
        )
    )
    return 0


def _safety_check(args: argparse.Namespace) -> int:
    from cutover.serving.safety.check import check_lines
    from cutover.serving.safety.policy import PolicyError
    from cutover.serving.safety.source import load

    try:
        policy = load(args.policy)
    except PolicyError as error:
        print(f"cutover safety check: {error}", file=sys.stderr)
        return 2
    every_line_read = True
    for ok, line in check_lines(policy, sys.stdin):
        every_line_read &= ok
        print(line, flush=True)
    return 0 if every_line_read else 1


def _add_safety(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    safety = sub.add_parser("safety", help="SafetyPolicy tools")
    commands = safety.add_subparsers(dest="safety_command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="apply a SafetyPolicy to JSON lines {text, scope} on stdin; one JSON line out per input",
        description='Reads JSON lines {"text": ..., "scope": "input"|"output"} (scope defaults to input) '
        "and prints one JSON line per input: each filter's findings (filter, category, score, action), the "
        "decision (pass, block, escalate, redact, disclaim, flag, or unavailable when a filter failed under "
        "failClosed) and the text as it would be answered. Exit 2: the policy is invalid; 1: a line was not "
        "such an object. No webhook is called.",
    )
    check.add_argument("--policy", type=Path, required=True, help="the SafetyPolicy: JSON or a YAML manifest")
    check.set_defaults(run=_safety_check)


def _positive_seconds(text: str) -> float:
    """A finite number of seconds above 0; ArgumentTypeError (a usage error) otherwise."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds above 0")
    return value


def _positive_count(text: str) -> int:
    """A whole number above 0; ArgumentTypeError (a usage error) otherwise."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a count above 0")
    return value


def _ingress_rules(text: str) -> list[dict[str, Any]]:
    """``--serving-network-policy``'s value: a JSON list of NetworkPolicyIngressRule objects
    (networking.k8s.io/v1, each with ``from`` and ``ports``). Raises ArgumentTypeError (a usage
    error) for anything else; the API server checks the rules' fields when they are applied."""
    try:
        rules = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(rules, list) or not all(isinstance(rule, dict) for rule in rules):
        raise argparse.ArgumentTypeError("a JSON list of NetworkPolicyIngressRule objects is expected")
    return rules


def _add_otlp(command: argparse.ArgumentParser) -> None:
    """``--otlp-endpoint``: tracing with OpenTelemetry (``serving/tracing.py``), off by default."""
    command.add_argument(
        "--otlp-endpoint",
        default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
        metavar="URL",
        help="trace requests and export the spans over OTLP/HTTP to this collector, e.g. http://collector:4318 "
        "(default: $OTEL_EXPORTER_OTLP_ENDPOINT; unset: no tracing)",
    )


def _add_gateway(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gateway = sub.add_parser("gateway", help="run the API gateway in front of every serving revision")
    gateway.add_argument("-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)")
    gateway.add_argument("--kubeconfig", help="default: in-cluster, then $KUBECONFIG, then ~/.kube/config")
    gateway.add_argument("--host", default="0.0.0.0")
    gateway.add_argument("--port", type=int, default=GATEWAY_PORT)
    gateway.add_argument(
        "--grpc-port",
        type=int,
        help=f"serve gRPC too, on this port (0 picks one, logged; in the chart {GATEWAY_GRPC_PORT})",
    )
    gateway.add_argument("--tiers", type=Path, help="YAML overriding tier limits: {pro: {rate: 100, burst: 200}}")
    gateway.add_argument("--retries", type=int, default=1, help="extra attempts where safe (default 1)")
    gateway.add_argument("--backend-timeout", type=float, default=30.0, help="seconds per attempt")
    gateway.add_argument("--max-in-flight", type=int, default=4096, help="requests in progress before 503")
    gateway.add_argument("--breaker-failures", type=int, default=5, help="consecutive failures that open a circuit")
    gateway.add_argument("--breaker-open-seconds", type=float, default=10.0)
    gateway.add_argument("--shutdown-delay", type=float, default=0.0, help="seconds not-ready before closing")
    gateway.add_argument("--shutdown-grace", type=float, default=30.0, help="seconds for in-flight requests")
    gateway.add_argument("--backends", type=Path, help="development: JSON map namespace/service -> URL, followed live")
    gateway.add_argument("--no-auth", action="store_true", help="development: no API keys, no rate limits")
    gateway.add_argument(
        "--feedback-window",
        type=_positive_seconds,
        help="seconds after an answer during which its ground truth is taken (default 3600)",
    )
    gateway.add_argument(
        "--feedback-max-answers",
        type=_positive_count,
        help="rows of answers kept for feedback, an answer of n rows counting n, about 450 bytes a one-row "
        "answer (default 100000)",
    )
    _add_otlp(gateway)
    gateway.add_argument("-v", "--verbose", action="store_true")
    gateway.set_defaults(run=_gateway)

    key = sub.add_parser("gateway-key", help="make an API key; prints its (hashed) Secret to apply")
    key.add_argument("name", help="Secret name")
    key.add_argument("--tier", choices=["free", "pro", "enterprise", "admin"], default="free")
    key.add_argument("-n", "--namespace", default="default", help="the gateway's namespace")
    key.add_argument("--owner", default="", help="who the key belongs to")
    key.add_argument("--models", default="", help="comma-separated models it may call (default: all)")
    key.set_defaults(run=_gateway_key)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="cutover", description="Ship ML models to production safely.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    crds = sub.add_parser("crds", help="write the CustomResourceDefinitions generated from the API models")
    crds.add_argument("-o", "--output", default="crds", help="directory to write into (default: crds)")
    crds.add_argument("--stdout", action="store_true", help="print a multi-document YAML stream instead")
    crds.set_defaults(run=_crds)

    op = sub.add_parser("operator", help="run the operator (one process, or replicas with --leader-elect)")
    op.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    op.add_argument("--metrics-port", type=int, default=8000, help="Prometheus metrics port (0 turns it off)")
    op.add_argument(
        "--verdicts-from",
        type=Path,
        metavar="DIR",
        help="development: read analysis verdicts from DIR/<namespace>_<name>.json instead of Prometheus",
    )
    op.add_argument(
        "--serving-otlp-endpoint",
        metavar="URL",
        help="serving pods trace requests and export the spans over OTLP/HTTP to this collector "
        "(cutover serve --otlp-endpoint); default: they do not trace",
    )
    op.add_argument(
        "--serving-network-policy",
        type=_ingress_rules,
        metavar="JSON",
        help="give each ModelDeployment a NetworkPolicy admitting to its serving pods only these sources: "
        "a JSON list of NetworkPolicyIngressRule objects (the chart's networkPolicy values render it); "
        "default: no NetworkPolicy",
    )
    shards = op.add_argument_group("sharding (several operators, each serving its own objects)")
    shards.add_argument(
        "--shard",
        metavar="NAME",
        help="reconcile only ModelDeployments, SafetyPolicies and AlertRules labelled cutover.dev/shard=NAME",
    )
    shards.add_argument(
        "--default-shard", action="store_true", help="with --shard: also the objects without a cutover.dev/shard label"
    )
    election = op.add_argument_group(
        "leader election (several replicas, one reconciling: the holder of a coordination.k8s.io Lease)"
    )
    election.add_argument("--leader-elect", action="store_true", help="reconcile only while holding the Lease")
    election.add_argument("--leader-elect-resource-name", default="cutover-operator", help="the Lease's name")
    election.add_argument(
        "--leader-elect-resource-namespace", default="default", help="the Lease's namespace (default: default)"
    )
    election.add_argument(
        "--leader-elect-lease-duration",
        type=int,
        default=10,
        metavar="SECONDS",
        help="a standby takes the Lease once it has not changed for this long (default 10)",
    )
    election.add_argument(
        "--leader-elect-renew-deadline",
        type=float,
        default=7.0,
        metavar="SECONDS",
        help="the leader exits when it has not renewed the Lease for this long; below the lease duration (default 7)",
    )
    election.add_argument(
        "--leader-elect-retry-period",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often the leader renews and a standby looks; below the renew deadline (default 2)",
    )
    op.add_argument("-v", "--verbose", action="store_true")
    op.set_defaults(run=_operator)
    _add_serve(sub)
    _add_gateway(sub)
    _add_safety(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
