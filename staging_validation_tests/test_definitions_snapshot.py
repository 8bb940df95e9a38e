"""The code location's graph as a reviewed snapshot: an asset, dependency, partitioning, check, job or sensor
added, removed or rewired by accident fails here. After an intended change, regenerate and review the diff:

    UPDATE_DEFINITIONS_SNAPSHOT=1 .venv/bin/pytest staging_validation_tests/test_definitions_snapshot.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from staging_validation.definitions import build_definitions

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def definitions_graph(data_root: Path) -> dict:
    repository = build_definitions(str(data_root)).get_repository_def()
    graph = repository.asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "group": node.group_name,
            "partitions": type(node.partitions_def).__name__ if node.partitions_def else None,
            "checks": sorted(check.name for check in node.check_keys),
        }
    return {
        "assets": assets,
        "jobs": sorted(job.name for job in repository.get_all_jobs() if not job.name.startswith("__")),
        "sensors": sorted(sensor.name for sensor in repository.sensor_defs),
        "resources": sorted(repository.get_top_level_resources()),
    }


def test_the_definitions_graph_matches_its_reviewed_snapshot(tmp_path):
    current = definitions_graph(tmp_path)
    if os.environ.get("UPDATE_DEFINITIONS_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert current == json.loads(SNAPSHOT.read_text(encoding="utf-8")), (
        "the definitions changed; if intended, regenerate the snapshot (see this module's docstring)")
