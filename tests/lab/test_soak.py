"""The soak's verdict: flat memory and files pass; growth or a stuck tunnel fail, saying which."""

from fluxify.lab.soak import Sample, judge, rekeys_seen


def samples(
    count: int,
    *,
    rss_step_kb: int = 0,
    fd_step: float = 0,
    ping_from: int = -1,
    rekeys: list[int] | None = None,
) -> list[Sample]:
    return [
        Sample(
            at_s=10.0 * i,
            server_rss_kb=60_000 + rss_step_kb * i,
            server_fds=18 + int(fd_step * i),
            client_rss_kb=70_000,
            client_fds=14,
            sessions=1,
            server_paths=2,
            client_paths_alive=2,
            wan2_up=True,
            tunnel_ping=ping_from < 0 or i < ping_from,
            rekeys=rekeys[i] if rekeys else 0,
        )
        for i in range(count)
    ]


def test_flat_samples_pass() -> None:
    assert judge(samples(40), 10.0) == []


def test_memory_or_file_growth_fails_naming_the_side() -> None:
    (failure,) = judge(samples(40, rss_step_kb=2000), 10.0)
    assert failure.startswith("server RSS grew")
    (failure,) = judge(samples(40, fd_step=0.5), 10.0)
    assert failure.startswith("server open files grew")


def test_a_tunnel_that_stops_carrying_pings_is_stuck() -> None:
    (failure,) = judge(samples(40, ping_from=30), 10.0)
    assert failure.startswith("stuck")


def test_too_short_a_run_is_not_judged_flat() -> None:
    assert judge(samples(3), 10.0)[0].startswith("only 3 samples")


def test_keys_that_rotate_as_asked_pass_and_a_new_session_counts_again() -> None:
    # 40 samples 10 s apart at a rekey every 60 s: 6 rekeys at least; the session is replaced
    # after the fourth (the server's count starts again from 0)
    counts = [i // 6 for i in range(24)] + [(i - 24) // 6 for i in range(24, 40)]
    assert rekeys_seen(samples(40, rekeys=counts)) == 3 + 2
    assert judge(samples(40, rekeys=counts), 10.0, 60.0) == []


def test_keys_that_stop_rotating_fail_with_how_often_they_did() -> None:
    counts = [min(i // 6, 2) for i in range(40)]
    (failure,) = judge(samples(40, rekeys=counts), 10.0, 60.0)
    assert failure == "keys rotated 2 times in 6 min, every 60 s asked (at least 5 expected)"
