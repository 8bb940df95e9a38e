"""The report as the Dagster UI shows it: charts embedded as data URIs, long evidence lines wrapped and cut."""

import base64
import re

from staging_validation.acceptance.report import CHARTS, UI_CODE_LINES_PER_ITEM, UI_CODE_WIDTH, ui_markdown
from staging_validation.layout import CampaignLayout

PNG = b"\x89PNG\r\n\x1a\n" + b"chart bytes"


def test_every_chart_link_becomes_a_data_uri_of_the_chart_file(tmp_path):
    layout = CampaignLayout.of(tmp_path, "c1")
    for index, relative in enumerate(CHARTS.values()):
        chart = layout.chart_file(relative.rsplit("/", 1)[1])
        chart.parent.mkdir(parents=True, exist_ok=True)
        chart.write_bytes(PNG + bytes([index]))
    report = "# Report\n\n" + "\n\n".join(f"![chart {name}]({relative})" for name, relative in CHARTS.items())

    shown = ui_markdown(report, layout)

    assert "](charts/" not in shown
    uris = re.findall(r"!\[chart (\w+)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", shown)
    assert [name for name, _ in uris] == list(CHARTS)
    for index, (_, data) in enumerate(uris):
        assert base64.b64decode(data) == PNG + bytes([index])


def test_long_evidence_lines_are_wrapped_and_cut_only_inside_code_blocks(tmp_path):
    long_line = "2026-11-21T00:05:00 (hour 5): " + "x" * (UI_CODE_WIDTH * 10)
    prose = "word " * 60
    report = f"{prose}\n\n```\n{long_line}\nshort line\n```\n"

    shown = ui_markdown(report, CampaignLayout.of(tmp_path, "c1")).split("\n")

    assert shown[0] == prose  # prose wraps in the browser by itself
    code = shown[shown.index("```") + 1:shown.index("```", shown.index("```") + 1)]
    assert all(len(line) <= UI_CODE_WIDTH for line in code)
    assert len(code) == UI_CODE_LINES_PER_ITEM + 1
    assert code[0].startswith("2026-11-21T00:05:00 (hour 5): xxx")
    assert "cut: the whole line is in STAGING_ACCEPTANCE_REPORT.md" in code[UI_CODE_LINES_PER_ITEM - 1]
    assert code[-1] == "short line"
