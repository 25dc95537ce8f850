"""The load bot, small and fast, against real nodes on the test stack: any loss fails."""

from conftest import TEST_SECRET

from chattrio.bot.config import load_config
from chattrio.bot.report import summarize, text_summary
from chattrio.bot.runner import run


async def test_bot_against_real_nodes(cluster, tmp_path):
    cfg = load_config(
        [
            "--scenario",
            "pytest",
            "--users",
            "20",
            "--rooms",
            "2",
            "--ramp-up",
            "1",
            "--duration",
            "5",
            "--rate",
            "1",
            "--loss-grace",
            "5",
            "--user-id-prefix",
            f"{cluster.prefix}b",
            "--out",
            str(tmp_path),
            *[arg for node in cluster.nodes for arg in ("--node", node.url, "--metrics-url", node.internal_url)],
        ]
    )
    summary = summarize(await run(cfg, None))
    print(text_summary(summary))
    d = summary["deliveries"]
    assert summary["users"]["connected"] == 20
    assert summary["messages"]["acked"] == summary["messages"]["sent"] > 0
    # 2 rooms of 10 and senders receive their own; a message sent while a room-mate was still
    # connecting (a loaded machine stretches the 1 s ramp-up) expects one delivery fewer
    assert 0.9 * summary["messages"]["acked"] * 10 <= d["expected"] <= summary["messages"]["acked"] * 10
    assert d["delivered"] == d["expected"]
    assert (d["lost"], d["duplicates"], d["outOfOrder"]) == (0, 0, 0), summary["notes"]
    assert summary["verdict"]["passed"]
    assert all(sample is not None for sample in summary["server"]["metrics"]["end"])


async def test_bot_signs_its_own_tokens_against_jwt_mode_nodes(make_cluster, tmp_path):
    """With --token-secret the users (and the rooms' owner) present tokens they signed, as an
    identity service's users would: no REST sign-in, which jwt mode refuses."""
    cluster = await make_cluster(1, auth_mode="jwt", jwt_algorithm="HS256")
    prefix = f"{cluster.prefix}t"
    flags = "--scenario pytest --users 6 --rooms 2 --ramp-up 1 --duration 3 --rate 1 --loss-grace 5"
    cfg = load_config(
        [*flags.split(), "--user-id-prefix", prefix, "--token-secret", TEST_SECRET, "--out", str(tmp_path)]
        + ["--node", cluster.nodes[0].url]
    )
    summary = summarize(await run(cfg, None))
    print(text_summary(summary))
    assert summary["users"]["connected"] == 6
    assert summary["messages"]["acked"] == summary["messages"]["sent"] > 0
    assert summary["deliveries"]["delivered"] == summary["deliveries"]["expected"] > 0
    assert summary["verdict"]["passed"]
