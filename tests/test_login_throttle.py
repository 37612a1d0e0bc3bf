"""The login throttle's arithmetic, on a clock the test moves: free tries, doubling locks up to
the bound, a fresh start after an hour's quiet or a right login, IPv6 clients by /64, and a
bounded memory. (tests/security/test_login_throttle.py runs it in `nobat serve`.)"""

from __future__ import annotations

from web.throttle import FORGET_AFTER_S, MAX_CLIENTS, LoginThrottle, client_of


class Clock:
    """Monotonic seconds, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def locks(throttle: LoginThrottle, clock: Clock, client: str, wrong: int) -> list[int]:
    """The wait after each of `wrong` wrong tokens, each sent once the last lock is over."""
    waits = []
    for _ in range(wrong):
        throttle.failed(client)
        waits.append(throttle.wait(client))
        clock.now += waits[-1]
    return waits


def test_three_wrong_tokens_go_free_then_each_locks_twice_as_long_up_to_the_bound() -> None:
    clock = Clock()
    throttle = LoginThrottle(max_lock_s=300, clock=clock)
    assert locks(throttle, clock, "10.0.0.1", 14) == [0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128,
                                                        256, 300, 300]
    assert throttle.wait("10.0.0.2") == 0  # another client is not held up


def test_a_right_login_or_an_hour_of_quiet_starts_the_count_afresh() -> None:
    clock = Clock()
    throttle = LoginThrottle(max_lock_s=300, clock=clock)
    locks(throttle, clock, "10.0.0.1", 5)
    throttle.succeeded("10.0.0.1")
    assert locks(throttle, clock, "10.0.0.1", 4) == [0, 0, 0, 1]
    clock.now += FORGET_AFTER_S + 1
    assert locks(throttle, clock, "10.0.0.1", 4) == [0, 0, 0, 1]


def test_a_partial_second_is_told_as_a_whole_one() -> None:
    clock = Clock()
    throttle = LoginThrottle(max_lock_s=300, clock=clock)
    locks(throttle, clock, "10.0.0.1", 5)  # the fifth locks for 2 s
    clock.now -= 1.5
    assert throttle.wait("10.0.0.1") == 2
    clock.now += 1.4
    assert throttle.wait("10.0.0.1") == 1


def test_an_ipv6_client_is_its_64_and_an_ipv4_one_its_address() -> None:
    same_64 = {client_of("2001:db8:1:2:aaaa::1"), client_of("2001:db8:1:2:bbbb::9")}
    assert same_64 == {"2001:db8:1:2::/64"}
    assert client_of("2001:db8:1:3::1") != client_of("2001:db8:1:2::1")
    assert (client_of("127.0.0.1"), client_of(None)) == ("127.0.0.1", "unknown")


def test_memory_is_bounded_and_the_longest_quiet_client_forgotten() -> None:
    clock = Clock()
    throttle = LoginThrottle(max_lock_s=300, clock=clock)
    for _ in range(4):
        throttle.failed("first")
    for n in range(MAX_CLIENTS):
        throttle.failed(f"client-{n}")
    assert throttle.wait("first") == 0  # forgotten to make room
    assert len(throttle) == MAX_CLIENTS
