"""`meter health`: the container's health check. Only the standard library: it runs every few
seconds beside the server, so it must start in milliseconds, not load the server stack."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

HEALTH_PATH = "/healthz"  # served by the webhook adapter's HTTP server (meter.webhooks.app)
# METER_HTTP_ADDR's default (meter.config declares the setting with it): here, so that the probe
# reads its address without loading the settings' validation (pydantic) every few seconds.
DEFAULT_HTTP_ADDR = "127.0.0.1:8080"


def health_url(http_addr: str) -> str:
    host, _, port = http_addr.rpartition(":")
    if host.strip("[]") in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}{HEALTH_PATH}"


def probe(url: str) -> int:
    """0 when meter answers SERVING; 1 otherwise, with why on stderr."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            print(f"meter: {json.load(answer)['status']}")
            return 0
    except urllib.error.HTTPError as error:
        print(f"meter: {error.code} {error.read().decode(errors='replace')}", file=sys.stderr)
    except OSError as error:
        print(f"meter: {url}: {error}", file=sys.stderr)
    return 1


def main() -> int:
    """`python -m meter.health_probe`: the image's HEALTHCHECK, on METER_HTTP_ADDR."""
    return probe(health_url(os.environ.get("METER_HTTP_ADDR") or DEFAULT_HTTP_ADDR))


if __name__ == "__main__":
    sys.exit(main())
