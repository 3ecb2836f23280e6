"""domain/webhooks.py: the pure rules of webhook delivery (targets, refused addresses, signatures, backoff,
dead events, the lease's timing)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from dialerd.domain.webhooks import (
    MAX_DELAY,
    WebhookUrl,
    address_refused,
    check_secret,
    delivered,
    is_dead,
    lease_fresh,
    lease_renewal_due,
    lease_tick,
    retry_delay,
    signature,
    verify,
)


def test_retry_delay_doubles_from_one_second_to_ten_minutes_with_bounded_jitter() -> None:
    for failures, base in ((1, 1.0), (2, 2.0), (3, 4.0), (10, 512.0)):
        assert retry_delay(failures, 0.5) == pytest.approx(base)  # the middle of the jitter
        assert base * 0.8 <= retry_delay(failures, 0.0) < retry_delay(failures, 0.999) <= base * 1.2
    for failures in (11, 12, 40, 10_000):
        assert retry_delay(failures, 0.999) == MAX_DELAY and retry_delay(failures, 0.0) == pytest.approx(480.0)


def test_an_event_is_dead_once_it_has_failed_for_the_whole_retry_period() -> None:
    since = datetime(2026, 12, 3, tzinfo=UTC)
    assert not is_dead(since, since + timedelta(hours=23, minutes=59))
    assert is_dead(since, since + timedelta(hours=24))
    assert is_dead(since, since + timedelta(seconds=2), retry_for=1.5)


def test_only_2xx_delivers() -> None:
    assert [s for s in (199, 200, 201, 204, 299, 300, 301, 400, 410, 500) if delivered(s)] == [200, 201, 204, 299]


def test_the_signature_is_hmac_sha256_of_time_dot_body_and_verifies() -> None:
    body = b'{"id":7}'
    header = signature("k" * 20, 1_700_000_000, body)
    mac = hmac.new(b"k" * 20, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"
    assert verify("k" * 20, header, body, 1_700_000_100)
    assert not verify("k" * 20, header, body + b" ", 1_700_000_100)  # another body
    assert not verify("x" * 20, header, body, 1_700_000_100)  # another key
    assert not verify("k" * 20, header, body, 1_700_000_000 + 301)  # too old: a replay
    assert not verify("k" * 20, "v1=" + mac, body, 1_700_000_000)  # no time
    assert not verify("k" * 20, "garbage", body, 1_700_000_000)


@pytest.mark.parametrize("address, why", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.0.0.1", "private"), ("172.16.5.4", "private"),
    ("192.168.1.1", "private"), ("fd00::1", "private"), ("100.64.0.1", "private"), ("169.254.169.254", "link-local"),
    ("fe80::1%eth0", "link-local"), ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"), ("240.0.0.1", "private"), ("192.0.2.1", "private"),  # IANA special-purpose: private to ipaddress
])
def test_internal_addresses_are_refused(address: str, why: str) -> None:
    refused = address_refused(address)
    assert refused is not None and why in refused


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_not_refused(address: str) -> None:
    assert address_refused(address) is None


@pytest.mark.parametrize("raw, words", [
    ("ftp://example.com/", "http"), ("example.com/hook", "http"), ("https:///path", "host"),
    ("https://u:p@example.com/", "credentials"), ("https://example.com/#frag", "fragment"),
    ("https://exa mple.com/", "spaces"), ("https://example.com:99999/", "valid URL"),
    ("https://example.com/" + "a" * 2000, "2000"),
])
def test_bad_urls_are_refused_naming_the_problem(raw: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        WebhookUrl.parse(raw)


def test_a_good_url_keeps_its_text_and_knows_its_host_and_port() -> None:
    url = WebhookUrl.parse("  HTTPS://Hooks.Example.com/dialerd?x=1  ")
    assert (url.text, url.scheme, url.host, url.port) == ("HTTPS://Hooks.Example.com/dialerd?x=1", "https",
                                                          "hooks.example.com", 443)
    assert url.literal_ip is None
    assert str(WebhookUrl.parse("http://[::1]:8080/x").literal_ip) == "::1"
    assert WebhookUrl.parse("http://10.0.0.1/").port == 80


def test_secrets_need_sixteen_printable_characters() -> None:
    assert check_secret("s" * 16) == "s" * 16
    for bad, words in (("s" * 15, "at least 16"), ("s" * 201, "at most 200"), ("s" * 16 + "\n", "control")):
        with pytest.raises(ValueError, match=words):
            check_secret(bad)


def test_a_held_lease_is_never_older_than_half_its_length_at_a_keepers_tick() -> None:
    lease = 9.0
    assert lease_tick(lease) == 3.0
    assert not lease_renewal_due(100.0, 101.4, lease) and lease_renewal_due(100.0, 101.5, lease)
    # Whatever the phase of the keeper's ticks, a renewal not due at one tick is due at the next, so the
    # lease's age when renewed is below a sixth plus a tick: half its length.
    for renewed in (0.0, 0.1, 1.49, 2.9):
        ticks = [t * lease_tick(lease) for t in range(1, 4)]
        first_due = next(t for t in ticks if t >= renewed and lease_renewal_due(renewed, t, lease))
        assert first_due - renewed < lease / 2


def test_a_post_needs_a_lease_renewed_within_two_thirds_of_its_length() -> None:
    assert lease_fresh(100.0, 105.9, 9.0) and not lease_fresh(100.0, 106.0, 9.0)
    assert lease_fresh(100.0, 100.0, 9.0)
