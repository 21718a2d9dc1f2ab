"""`flowrec serve`: the lookup and ingest API (and the /demo page) on uvicorn."""

from __future__ import annotations

import argparse
import functools
import ipaddress
import logging
import os
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Callable

from flowrec.config import DEFAULT_REC_ID_SECRET, UsageError, add_settings_arguments, load_settings, port_number

log = logging.getLogger(__name__)

HELP = "run the lookup and ingest HTTP API, with the /demo page, on uvicorn"


def _positive(kind: Callable[[str], int | float]) -> Callable[[str], int | float]:
    """An argparse ``type``: a number of ``kind`` above zero."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid int value" message
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, loopback only)")
    parser.add_argument("--port", type=port_number, default=8000, help="port to listen on")
    parser.add_argument("--workers", type=_positive(int), default=1, help="uvicorn worker processes (metrics are per process)")
    parser.add_argument("--catalog", type=Path, default=None, help="catalog JSON-lines file for browsing (demo shop window), loaded once")
    parser.add_argument("--demo", action="store_true", help="accept a demo write key (generated, or --demo-key) and put it in the /demo page")
    parser.add_argument("--demo-key", default=None, help="the demo key to use with --demo (default: a random one)")
    parser.add_argument("--max-body-bytes", type=_positive(int), default=None, help="largest request body accepted, 413 beyond (default 1 MiB)")
    parser.add_argument("--access-log", action="store_true", help="log every request (off by default: it costs throughput)")
    edge = parser.add_argument_group("limits at the HTTP edge (per worker process; see deploy/README.md for a reverse proxy in front)")
    edge.add_argument("--max-header-bytes", type=_positive(int), default=None, help="largest request head (request line + headers), 431 beyond (default 16 KiB)")
    edge.add_argument("--max-headers", type=_positive(int), default=None, help="most headers in a request, 431 beyond (default 100)")
    edge.add_argument("--header-timeout-s", type=_positive(float), default=None, help="seconds a client has to send a request head, 408 after (default 10)")
    edge.add_argument("--body-timeout-s", type=_positive(float), default=None, help="seconds a request's whole body may take, 408 after (default 30)")
    edge.add_argument("--trusted-proxies", default=None, metavar="IPS",
                      help="comma-separated addresses of reverse proxies whose X-Forwarded-For/-Proto are believed (default: none)")
    edge.add_argument("--max-connections", type=_positive(int), default=None, help="open connections, more are answered 503 and closed (default 1000)")
    add_settings_arguments(parser, only=("redis-url", "namespace", "spool-dir", "api-keys", "model-config", "redis-deadline-ms", "rec-id-secret"))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_files(catalog: Path | None, spool_dir: Path | None) -> None:
    """The files the API needs before it listens: the catalog file readable, the spool directory creatable.

    Raises :class:`UsageError` naming the path (the API would otherwise fail at start with a traceback).
    """
    if catalog is not None and not catalog.is_file():
        raise UsageError(f"catalog file not found: {catalog}")
    if spool_dir is not None:
        try:
            Path(spool_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the spool directory {spool_dir}: {exc.strerror or exc}") from None


def main(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import BODY_TIMEOUT_S, MAX_BODY_BYTES, create_app, freeze_startup_objects
    from api.browse import BrowseCatalog
    from api.edge import EdgeLimits, GuardedHttpToolsProtocol
    from flowrec.localredis import LocalRedis

    settings = load_settings(args)
    check_files(args.catalog, settings.spool_dir)
    max_body_bytes = args.max_body_bytes or MAX_BODY_BYTES
    body_timeout_s = args.body_timeout_s or BODY_TIMEOUT_S
    defaults = EdgeLimits()
    limits = EdgeLimits(
        max_head_bytes=args.max_header_bytes or defaults.max_head_bytes,
        max_headers=args.max_headers or defaults.max_headers,
        head_timeout_s=args.header_timeout_s or defaults.head_timeout_s,
        max_connections=args.max_connections or defaults.max_connections,
    )
    demo_key = (args.demo_key or secrets.token_urlsafe(24)) if args.demo else None
    if args.demo_key and not args.demo:
        log.warning("--demo-key is ignored without --demo")
    if demo_key and not _is_loopback(args.host):
        log.warning("--demo puts a write key into the /demo page and %s is not a loopback address: anyone who can reach it can send events", args.host)
    if not settings.api_keys and not demo_key:
        log.warning("no API key configured (FLOWREC_API_KEYS / --api-keys): write endpoints will answer 503")
    if settings.rec_id_secret == DEFAULT_REC_ID_SECRET and not _is_loopback(args.host):
        log.warning("rec_ids are signed with the built-in secret, which anyone can read: set FLOWREC_REC_ID_SECRET (or --rec-id-secret-file) here and in the job")
    if settings.spool_dir is None:
        log.warning("no spool directory (FLOWREC_SPOOL_DIR / --spool-dir): events cannot reach the job, write endpoints will answer 503")
    local = None
    if settings.redis_url is None:
        local = LocalRedis().start()
        settings = replace(settings, redis_url=local.url)
        log.warning("no Redis URL given: serving from a private, empty redis-server at %s", local.url)
    # (SIGTERM: uvicorn shuts down gracefully, then re-raises it, and flowrec.cli's handler
    # turns it into SystemExit, so the private Redis below is still stopped.)
    uvicorn_options = dict(host=args.host, port=args.port, access_log=args.access_log, log_level="info", server_header=False,
                           proxy_headers=bool(args.trusted_proxies), forwarded_allow_ips=args.trusted_proxies,
                           http=functools.partial(GuardedHttpToolsProtocol, limits=limits))
    print(f"flowrec API on http://{args.host}:{args.port}  (docs /docs, demo page http://{args.host}:{args.port}/demo, dashboard http://{args.host}:{args.port}/dashboard)", flush=True)
    try:
        if args.workers <= 1:
            try:
                catalog = BrowseCatalog.from_file(args.catalog) if args.catalog else None
            except OSError as exc:
                raise UsageError(f"cannot read the catalog file {args.catalog}: {exc.strerror or exc}") from None
            app = create_app(settings, catalog=catalog, demo_key=demo_key, max_body_bytes=max_body_bytes, body_timeout_s=body_timeout_s)
            freeze_startup_objects()
            uvicorn.run(app, **uvicorn_options)
        else:
            # Worker processes build their own app from the environment (api.app.create_app_from_env).
            env = {
                "REDIS_URL": settings.redis_url,
                "FLOWREC_NAMESPACE": settings.namespace,
                "FLOWREC_MAX_BODY_BYTES": str(max_body_bytes),
                "FLOWREC_REDIS_DEADLINE_MS": str(settings.redis_deadline_ms),
                "FLOWREC_BODY_TIMEOUT_S": str(body_timeout_s),
                "FLOWREC_REC_ID_SECRET": settings.rec_id_secret,
            }
            if settings.spool_dir is not None:
                env["FLOWREC_SPOOL_DIR"] = str(settings.spool_dir)
            if settings.api_keys:
                env["FLOWREC_API_KEYS"] = ",".join(settings.api_keys)
            if getattr(args, "model_config", None):
                env["FLOWREC_MODEL_CONFIG"] = str(args.model_config)
            if args.catalog:
                env["FLOWREC_CATALOG"] = str(args.catalog)
            if demo_key:
                env["FLOWREC_DEMO_KEY"] = demo_key
            os.environ.update(env)
            uvicorn.run("api.app:create_app_from_env", factory=True, workers=args.workers, **uvicorn_options)
    finally:
        if local is not None:
            local.stop()
    return 0
