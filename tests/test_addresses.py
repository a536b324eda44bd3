"""HOST:PORT, spelled and checked one way for the agent's tail address and the tail's --listen."""

from __future__ import annotations

import pytest

from frosted_wire.address import TailAddress, check_host_port, parse_tail_address


@pytest.mark.parametrize("text", ["tail.example:1", "10.0.0.7:65535", "[::1]:50051", "[2001:db8::2]:443",
                                  "0.0.0.0:50051"])
def test_addresses_a_user_would_write_are_accepted(text):
    assert check_host_port(text) == text
    assert check_host_port(text, listening=True) == text


@pytest.mark.parametrize(("text", "message"), [("h:0", "port 0 is out of range (1-65535)"),
                                               ("h:99999", "port 99999 is out of range (1-65535)"),
                                               ("::1:50051", "IPv6 in brackets"), ("h", "expected HOST:PORT"),
                                               ("h:-1", "expected HOST:PORT"), ("h :1", "expected HOST:PORT"),
                                               ("h:\u0661", "expected HOST:PORT"),  # an Arabic-Indic digit one
                                               ("a" * 64 + ":1", "is not a host name (labels of 1 to 63"),
                                               ("tail..example:1", "is not a host name")])
def test_a_bad_address_says_what_is_wrong(text, message):
    with pytest.raises(ValueError) as refused:
        check_host_port(text)
    assert message in str(refused.value)


def test_a_listener_may_ask_the_os_for_a_port_but_not_past_65535():
    assert check_host_port("127.0.0.1:0", listening=True) == "127.0.0.1:0"  # the tail logs the port it got
    with pytest.raises(ValueError, match=r"port 99999 is out of range \(0-65535\)"):
        check_host_port("127.0.0.1:99999", listening=True)


@pytest.mark.parametrize(("text", "parsed"), [
    ("tail.example:50051", TailAddress("tail.example:50051", triton=False)),
    ("triton://triton.example:8001", TailAddress("triton.example:8001", triton=True)),
    ("triton://[::1]:8001/inception3-alpha-0.4", TailAddress("[::1]:8001", triton=True,
                                                             model="inception3-alpha-0.4")),
])
def test_the_agents_tail_is_ours_or_triton(text, parsed):
    assert parse_tail_address(text) == parsed


@pytest.mark.parametrize(("text", "message"), [("grpc://h:1", "or triton://HOST:PORT (Triton)"),
                                               ("triton://h", "expected HOST:PORT"),
                                               ("triton://h:0/m", "port 0 is out of range"),
                                               ("triton://h:1/a b", "Triton model name 'a b'")])
def test_a_bad_tail_address_says_what_is_wrong(text, message):
    with pytest.raises(ValueError) as refused:
        parse_tail_address(text)
    assert message in str(refused.value)
