"""The runbook's validation prompt set: labelled prompts that measure the AmbiguityGate's correctness.

A normal prompt flagged ambiguous is a false positive, an ambiguous prompt not flagged a false negative
(acceptance policy, gate 2). Each prompt goes out from its own user, 2 campaign-scaled seconds after the
previous one, on an open schedule (a slow answer never delays the next prompt). The set is the profile's
`prompts.prompt_set` file, else the shipped one; a verdict the profile declares not exposed leaves the
prompts unjudged (named in each record's `not_exposed`), never failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Literal

import pandas as pd
import pydantic

from staging_validation.schemas.timing import CampaignTiming
from staging_validation.config_files import StrictModel, load_yaml_model
from staging_validation.schemas.probe_records import ProbeRecord, records_to_table
from staging_validation.probes.result import ProbeResult, failure_line, judge, unverified_lines
from staging_validation.target.client import TargetClient

DEFAULT_PROMPT_SET = Path(__file__).resolve().parent / "prompt_set.yaml"
PROMPT_SPACING_S = 2  # runbook seconds between two prompts

PromptClass = Literal["normal", "ambiguous", "relationship", "stream", "tool"]


class Prompt(StrictModel):
    id: str = pydantic.Field(pattern=r"^[A-Za-z0-9_.-]+$")
    prompt_class: PromptClass = pydantic.Field(alias="class")
    message: str = pydantic.Field(min_length=1)
    expected_ambiguous: bool


class PromptSet(StrictModel):
    prompts: list[Prompt] = pydantic.Field(min_length=1)

    @pydantic.field_validator("prompts")
    @classmethod
    def _unique_ids(cls, prompts: list[Prompt]) -> list[Prompt]:
        seen: set[str] = set()
        for prompt in prompts:
            if prompt.id in seen:
                raise ValueError(f"duplicate prompt id {prompt.id!r}")
            seen.add(prompt.id)
        return prompts


def load_prompt_set(path: str | Path | None = None) -> PromptSet:
    return load_yaml_model(DEFAULT_PROMPT_SET if path is None else path, PromptSet)


def _problem(record: ProbeRecord, prompt: Prompt, min_sse_events: int) -> str | None:
    if prompt.prompt_class == "stream":
        events = record.sse_events or 0
        return None if events >= min_sse_events else f"stream returned {events} events, expected ≥ {min_sse_events}"
    if record.ambiguous is None:
        return "no ambiguity verdict in the response"
    if record.ambiguous != prompt.expected_ambiguous:
        return (
            "false positive: flagged ambiguous" if record.ambiguous else "false negative: not flagged ambiguous"
        )
    if not prompt.expected_ambiguous and not record.answer:
        return "no answer text in the response"
    if prompt.prompt_class == "relationship" and not record.relationship_type:
        return "no relationship context resolved"
    return None


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


@dataclasses.dataclass
class AmbiguityConfusion:
    """Labelled prompt-set rows that have an observed verdict, split by label, with the misjudged ones."""

    normal: pd.DataFrame  # labelled not ambiguous
    ambiguous: pd.DataFrame  # labelled ambiguous
    false_positives: pd.DataFrame  # normal prompts the target flagged ambiguous
    false_negatives: pd.DataFrame  # ambiguous prompts the target did not flag

    @property
    def labelled(self) -> int:
        return len(self.normal) + len(self.ambiguous)

    @property
    def fp_rate(self) -> float | None:
        return _rate(len(self.false_positives), len(self.normal))

    @property
    def fn_rate(self) -> float | None:
        return _rate(len(self.false_negatives), len(self.ambiguous))

    def summary(self) -> dict:
        return {
            "labelled": self.labelled,
            "labelled_negative": len(self.normal),
            "labelled_positive": len(self.ambiguous),
            "false_positives": len(self.false_positives),
            "false_negatives": len(self.false_negatives),
            "fp_rate": self.fp_rate,
            "fn_rate": self.fn_rate,
        }


def ambiguity_confusion(records: pd.DataFrame) -> AmbiguityConfusion:
    """The AmbiguityGate's errors on RECORD_SCHEMA rows with a label and an observed verdict (others are
    ignored), for the probe's summary and for gate 2 alike."""
    labelled = records[records["expected_ambiguous"].notna() & records["ambiguous"].notna()]
    normal = labelled[labelled["expected_ambiguous"] == False]  # noqa: E712 (pandas element-wise)
    ambiguous = labelled[labelled["expected_ambiguous"] == True]  # noqa: E712
    return AmbiguityConfusion(
        normal=normal,
        ambiguous=ambiguous,
        false_positives=normal[normal["ambiguous"] == True],  # noqa: E712
        false_negatives=ambiguous[ambiguous["ambiguous"] == False],  # noqa: E712
    )


async def prompt_set(
    client: TargetClient, timing: CampaignTiming, hour: int, prompts: PromptSet | None = None
) -> ProbeResult:
    """Send every prompt of the set, starting at the hour's start (or now, if later)."""
    prompts = load_prompt_set(client.profile.prompts.prompt_set) if prompts is None else prompts
    profile = client.profile
    start = max(client.now(), timing.hour_start_s(hour))
    spacing = timing.scale(PROMPT_SPACING_S)

    async def send(index: int, prompt: Prompt) -> ProbeRecord:
        sender = client.stream if prompt.prompt_class == "stream" else client.chat
        record = await sender(
            "prompt_set",
            timing,
            case=prompt.id,
            user=f"sv-prompt-h{hour:02d}-{prompt.id}",
            message=prompt.message,
            at=start + index * spacing,
        )
        record.expected_ambiguous = prompt.expected_ambiguous
        needed = None if prompt.prompt_class == "stream" else profile.not_exposed("extract.ambiguity")
        judge(record, _problem(record, prompt, profile.extract.sse.min_events), needed)
        return record

    records = list(await asyncio.gather(*(send(i, p) for i, p in enumerate(prompts.prompts))))
    failures = [failure_line(r) for r in records if r.passed is False]
    by_class: dict[str, dict[str, int]] = {}
    for prompt, record in zip(prompts.prompts, records, strict=True):
        counts = by_class.setdefault(prompt.prompt_class, {"sent": 0, "passed": 0})
        counts["sent"] += 1
        counts["passed"] += bool(record.passed)
    verdict_expected = [
        r for p, r in zip(prompts.prompts, records, strict=True) if p.prompt_class != "stream"
    ]
    return ProbeResult(
        probe="prompt_set",
        passed=not failures,
        records=records,
        failures=failures,
        summary={
            "hour": hour,
            "prompts": len(records),
            "passed": sum(bool(r.passed) for r in records),
            **ambiguity_confusion(records_to_table(records).to_pandas()).summary(),
            "verdict_unobserved": sum(r.ambiguous is None for r in verdict_expected),
            "by_class": by_class,
        },
        notes=unverified_lines(records),
    )
