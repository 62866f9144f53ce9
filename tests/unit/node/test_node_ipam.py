"""Per-pod loopback addresses."""

from __future__ import annotations

import ipaddress

import pytest

from mlops_localstack.node.ipam import AddressesExhausted, IPAllocator


def test_sequential_unique_and_stable_per_owner() -> None:
    ipam = IPAllocator("127.10.0.0/16")
    a, b = ipam.allocate("a"), ipam.allocate("b")
    assert a != b
    assert ipam.allocate("a") == a
    for ip in (a, b):
        assert ipaddress.ip_address(ip) in ipaddress.ip_network("127.10.0.0/16")
        assert ip != "127.0.0.1"
        assert not ip.endswith((".0", ".255"))


def test_release_does_not_reuse_immediately_and_wraps() -> None:
    ipam = IPAllocator("127.20.0.0/29")  # usable: .1 .. .6
    first = ipam.allocate("a")
    ipam.release("a")
    second = ipam.allocate("b")
    assert second != first  # sequential: freed addresses are reused only after wrapping
    for owner in "cdefg":
        ipam.allocate(owner)
    assert len(ipam.in_use()) == 6
    with pytest.raises(AddressesExhausted):
        ipam.allocate("h")
    ipam.release("c")
    assert ipam.allocate("h") not in {ip for ip, o in ipam.in_use().items() if o != "h"}


def test_reserve_existing_address() -> None:
    ipam = IPAllocator("127.10.0.0/16")
    assert ipam.reserve("127.10.3.4", "old-pod")
    assert not ipam.reserve("127.10.3.4", "other")
    assert not ipam.reserve("10.0.0.1", "other")
    assert ipam.allocate("old-pod") == "127.10.3.4"


def test_rejects_ranges_outside_loopback() -> None:
    with pytest.raises(ValueError):
        IPAllocator("10.0.0.0/24")


def test_skips_node_address() -> None:
    ipam = IPAllocator("127.0.0.0/30")  # .1 is the node; only .2 usable
    assert ipam.allocate("a") == "127.0.0.2"
    with pytest.raises(AddressesExhausted):
        ipam.allocate("b")


def test_non_loopback_ranges_for_alias_mode_and_exclusions() -> None:
    ipam = IPAllocator("198.18.0.0/24", require_loopback=False)
    assert ipam.allocate("a", exclude={"198.18.0.1", "198.18.0.2"}) == "198.18.0.3"


def test_alias_listing_parses_ip_output(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from mlops_localstack.node.ipam import LoopbackAliases

    out = (
        "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
        "1: lo    inet 198.18.0.5/32 scope global lo:mlops\\       valid_lft forever\n"
    )
    calls: list[tuple[str, ...]] = []

    def fake_ip(*args: str) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return subprocess.CompletedProcess(["ip", *args], 0, out, "")

    aliases = LoopbackAliases()
    monkeypatch.setattr(aliases, "_ip", fake_ip)
    assert aliases.present() == {"127.0.0.1", "198.18.0.5"}
    assert aliases.flush_label() == 1
    assert calls[-1] == ("addr", "del", "198.18.0.5/32", "dev", "lo")
    aliases.add("198.18.0.9")
    assert calls[-1] == ("addr", "add", "198.18.0.9/32", "dev", "lo", "label", "lo:mlops")
    aliases.remove("198.18.0.9")
    assert calls[-1] == ("addr", "del", "198.18.0.9/32", "dev", "lo")
    calls.clear()
    aliases.remove("198.18.0.77")  # never added by us: left alone
    assert calls == []


def test_seek_moves_the_sequence() -> None:
    ipam = IPAllocator("127.30.0.0/24")
    ipam.seek(0.5)
    assert ipam.allocate("a") == "127.30.0.127"  # .1 + int(253 * 0.5)
    ipam.seek(1.0)
    assert ipam.allocate("b") == "127.30.0.254"
    assert ipam.allocate("c") == "127.30.0.1"  # wrapped
