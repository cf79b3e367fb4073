"""The runtime's split modules keep their public names where callers import them.

``stream.processor``, ``stream.report``, ``stream.replay``, ``stream.sources`` and
``stream.experiment_run`` each define part of their API in modules beside them and
re-export it: the same objects, listed in ``__all__``.
"""

from __future__ import annotations

import importlib

import pytest

from streamlearn.stream import (
    edge,
    learning,
    model_guard,
    outputs,
    replay_files,
    replay_pacing,
    report_plots,
    report_text,
    rollback_run,
    source_rows,
)

REEXPORTED = {
    "streamlearn.stream.processor": {
        "DEAD_LETTER_MIN_BYTES": outputs,
        "BatchOutput": outputs,
        "DeadLetter": outputs,
        "Example": outputs,
        "Prediction": outputs,
        "ModelSlot": model_guard,
    },
    "streamlearn.stream.report": {
        "PLOTS": report_plots,
        "percentiles": report_plots,
        "read_scores": report_plots,
        "event_axis": report_plots,
        "METRICS": report_text,
        "report_markdown": report_text,
        "summary_table": report_text,
    },
    "streamlearn.stream.replay": {
        "Line": replay_files,
        "ReplayPlan": replay_files,
        "timed_lines": replay_files,
        "merge": replay_files,
        "in_range": replay_files,
        "plan_replay": replay_files,
        "record_time": replay_files,
        "send_offsets": replay_pacing,
        "gap_notice": replay_pacing,
        "pace": replay_pacing,
        "parse_speed": replay_pacing,
        "parse_time": replay_pacing,
    },
    "streamlearn.stream.sources": {"BadRow": source_rows, "row_to_record": source_rows},
    "streamlearn.stream.experiment_run": {
        "RollbackRun": rollback_run,
        "follow_inputs": rollback_run,
    },
}


@pytest.mark.parametrize("module", sorted(REEXPORTED))
def test_the_names_callers_import_are_the_defining_modules_objects(module):
    public = importlib.import_module(module)
    for name, home in REEXPORTED[module].items():
        assert name in public.__all__, (module, name)
        assert getattr(public, name) is getattr(home, name), (module, name)


def test_the_processor_defines_the_processor_and_prepared_batch_and_passes_on_the_record():
    processor = importlib.import_module("streamlearn.stream.processor")
    for name in ("Processor", "PreparedBatch"):
        assert getattr(processor, name).__module__ == "streamlearn.stream.processor"
    assert processor.Record is edge.Record and "Record" in processor.__all__
    assert issubclass(processor.Processor, learning.LabelLearning)
