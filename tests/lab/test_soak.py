"""The soak's verdict: flat memory and files pass; growth or a stuck tunnel fail, saying which."""

from fluxify.lab.soak import Sample, judge


def samples(
    count: int, *, rss_step_kb: int = 0, fd_step: float = 0, ping_from: int = -1
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
