"""What of the caller's environment reaches the programs the lab starts: the debugging switches,
nothing else. (Before, none did, and an A/B run through the bench with a switch set compared
the product with itself.)"""

from pathlib import Path

from fluxify.lab.deployment import DEBUG_SWITCHES, PROGRAM_PATH, program_env


def test_the_debugging_switches_reach_the_programs_and_nothing_else_does() -> None:
    caller = {
        "FLUXIFY_NO_OFFLOAD": "1",
        "FLUXIFY_TUN_TSO": "0",
        "FLUXIFY_NO_MODERATION": "1",
        "FLUXIFY_STATE_DIR": "/root/.fluxify",  # the caller's own: never the programs'
        "HOME": "/root",
        "PYTHONPATH": "/elsewhere",
    }
    env = program_env(Path("/tmp/lab/alice"), caller)
    assert env == {
        "FLUXIFY_NO_OFFLOAD": "1",
        "FLUXIFY_TUN_TSO": "0",
        "FLUXIFY_NO_MODERATION": "1",
        "PATH": PROGRAM_PATH,
        "FLUXIFY_STATE_DIR": "/tmp/lab/alice",
    }


def test_without_switches_a_program_gets_its_path_and_state_directory() -> None:
    assert program_env(Path("/tmp/lab/server"), {"FLUXIFY_EVENT_LOOP": "uvloop"}) == {
        "FLUXIFY_EVENT_LOOP": "uvloop",
        "PATH": PROGRAM_PATH,
        "FLUXIFY_STATE_DIR": "/tmp/lab/server",
    }
    assert program_env(Path("/s"), {}) == {"PATH": PROGRAM_PATH, "FLUXIFY_STATE_DIR": "/s"}
    assert "FLUXIFY_EVENT_LOOP" in DEBUG_SWITCHES
