"""What a URL from outside and a webhook endpoint's name may be, which hosts are said to be not
public, and how a URL is shown (never with its password)."""

from __future__ import annotations

import pytest

from meter.domain.errors import InvalidField
from meter.domain.urls import hostname, http_url, non_public, shown_url
from meter.domain.webhook_deliveries import endpoint_id


class TestEndpointUrls:
    """An http(s) URL with a host, a port in range and no credentials; taken as given."""

    @pytest.mark.parametrize(
        "url",
        [
            "https://product.example/meter-events",
            "http://127.0.0.1:8080/hook?token=x",
            "http://[::1]:8/",
            "https://bü.example/",
            "http://internal_host.lan./x",
        ],
    )
    def test_accepted(self, url: str) -> None:
        assert http_url(url) == url

    @pytest.mark.parametrize(
        ("url", "problem"),
        [
            ("http://", "a URL with a host"),
            ("http:///x", "a URL with a host"),
            ("ftp://example.com/", "an http:// or https:// URL"),
            ("example.com/hook", "an http:// or https:// URL"),
            ("http://example.com:99999/", "not a URL (Port out of range 0-65535)"),
            ("http://example.com:0/", "a port in 1-65535"),
            ("http://example.com:x/", "not a URL"),
            ("http://[::1/", "not a URL (Invalid IPv6 URL)"),
            ("http://exa!mple.com/", "'exa!mple.com' is neither a host name nor an IP address"),
            ("http://a..b/", "is neither a host name nor an IP address"),
            ("http://user:s3cret@example.com/", "no user or password in the URL"),
            ("http://@example.com/", "no user or password in the URL"),
            ("http://example.com/x\n", "without spaces or control characters"),
            ("http://exa mple.com/", "without spaces or control characters"),
            ("https://example.com/" + "x" * 2048, "1-2048 characters"),
            ("", "1-2048 characters"),
        ],
    )
    def test_refused(self, url: str, problem: str) -> None:
        with pytest.raises(InvalidField) as refused:
            http_url(url)
        assert refused.value.field == "url" and problem in str(refused.value)
        assert "s3cret" not in str(refused.value)

    def test_hostname(self) -> None:
        assert hostname("http://[::1]:8/x") == "::1" and hostname("https://Product.Example/") == "product.example"


class TestEndpointNames:
    def test_the_whole_name_matches(self) -> None:
        assert endpoint_id("product.hooks_1-a") == "product.hooks_1-a"
        for name in ("hooks\n", "", "a" * 65, "hooks/x", "hooks\nx"):
            with pytest.raises(InvalidField):
                endpoint_id(name)


class TestNotPublic:
    @pytest.mark.parametrize(
        ("address", "said"),
        [
            ("127.0.0.1", "a loopback address"),
            ("::1", "a loopback address"),
            ("169.254.169.254", "a link-local address"),
            ("fe80::1%25eth0", "a link-local address"),
            ("10.1.2.3", "a private address"),
            ("192.168.0.1", "a private address"),
            ("::ffff:10.0.0.1", "a private address"),
            ("fd00::1", "a private address"),
            ("0.0.0.0", "an unspecified address"),
            ("224.0.0.1", "a multicast address"),
            ("100.64.0.1", "a reserved address"),
            ("8.8.8.8", None),
            ("2606:4700:4700::1111", None),
            ("product.example", None),  # a name: what it resolves to is what is looked at
        ],
    )
    def test_what_an_address_is(self, address: str, said: str | None) -> None:
        assert non_public(address) == said


class TestShownUrls:
    def test_credentials_are_never_shown(self) -> None:
        assert shown_url("http://user:s3cret@example.com:8/x?q=1") == "http://***@example.com:8/x?q=1"
        assert shown_url("http://user:s3cret@/x") == "http://***@/x"
        assert shown_url("https://u:s3cret@[::1/x") == "https://***@[::1/x"  # no URL: hidden all the same
        assert shown_url("https://example.com/x") == "https://example.com/x"

    def test_on_one_printable_line(self) -> None:
        assert "\n" not in shown_url("/next\r\nSet-Cookie: x") and shown_url("/x\x1b[31m") == "/x?[31m"
