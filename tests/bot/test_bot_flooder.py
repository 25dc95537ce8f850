"""The bot's flooder against a real node with the default SEND limits: it is refused, and the
other users' accounting leaves its messages out."""

from chattrio.bot.config import load_config
from chattrio.bot.report import summarize, text_summary
from chattrio.bot.runner import run
from chattrio.config import Settings


async def test_a_flooder_is_rate_limited_and_left_out_of_the_accounting(make_cluster, tmp_path):
    defaults = Settings()
    cluster = await make_cluster(
        1,
        send_limit_per_connection=str(defaults.send_limit_per_connection),
        send_limit_per_user=str(defaults.send_limit_per_user),
    )
    cfg = load_config(
        [
            "--scenario",
            "pytest-flood",
            "--users",
            "5",
            "--rooms",
            "1",
            "--ramp-up",
            "1",
            "--duration",
            "3",
            "--rate",
            "1",
            "--loss-grace",
            "3",
            "--user-id-prefix",
            f"{cluster.prefix}f",
            "--out",
            str(tmp_path),
            "--flooders",
            "1",
            "--node",
            cluster.urls[0],
        ]
    )
    summary = summarize(await run(cfg, None))
    print(text_summary(summary))
    flood = summary["flood"]
    assert flood["acked"] > 0 and flood["rateLimited"] > 0, flood
    assert summary["messages"]["acked"] == summary["messages"]["sent"] > 0
    d = summary["deliveries"]
    assert (d["lost"], d["duplicates"], d["outOfOrder"], d["unexpected"]) == (0, 0, 0, 0)
    assert summary["protocolViolations"] == 0, summary["notes"]
    assert summary["verdict"]["passed"]
