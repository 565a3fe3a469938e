"""What our task messages show as their arguments (Flower, task events, worker logs)."""

from __future__ import annotations

from workers.summaries import describe

TOKEN = "ghp_" + "Argsrepr" * 4 + "abcd"


def test_given_a_job_with_secrets_when_described_then_the_summary_holds_none() -> None:
    summary = describe(
        job_id="01abc",
        task=f"Publish the docs with {TOKEN}\nthen tell everyone about it in the changelog, please",
        repo_url="https://alice:s3cret-pass@github.com/acme/widgets.git",
        profile="default",
    )

    assert summary == (
        "job_id='01abc' task='Publish the docs with *** then tell everyone about it in the…' "
        "repo='https://github.com/acme/widgets.git' profile='default'"
    )


def test_given_a_token_cut_by_the_summary_length_when_described_then_it_is_still_masked() -> None:
    summary = describe(task="x" * 40 + " " + TOKEN)

    assert "ghp_" not in summary and "Argsrepr" not in summary
