"""A realistic example of each request body and of the main responses, for the OpenAPI document
(``api.openapi.example`` puts one on its Struct; the document shows it on every operation that
sends or answers that Struct, and schemathesis' ``examples`` phase sends the request ones).

One story runs through them: an account's newsroom item, a reporter's workflow (transcribe, then
a summary and review) and the execution that ran it, as a server with the simulated providers
answers them (the texts rewritten to read like a real video's). Each validates against its own
Struct (tests/api/test_openapi.py); the ids are shaped like real ones but name nothing on a given
server, so a request example there meets a 404 (or the declared semantic 422) where it names one.

Plain data, importing nothing of the API, so every schema module can use it.
"""

from __future__ import annotations

from typing import Any

ITEM_ID = "itm_01m923qcqgf4pr3zr8zj"
COLLECTION_ID = "col_01m923qcqtdv5fa7eqgt"
REPORTER_ID = "rep_01m923qcrj6phnxv5arv"
WORKFLOW_ID = "wf_01m923qcs8fywxjb01j0"
VIDEO = "https://youtu.be/dQw4w9WgXcQ"
TRANSCRIPT_SHA256 = "7d1ac45508030c048f1a934c20164c0f1fc73105891967d4c501b80cea354a66"
SUMMARY_SHA256 = "36912ad003ecc30efa9e50ed813bdd7f60244446866b8484dbf2c552a39773a3"
STEPS: list[dict[str, Any]] = [
    {"tool_id": "transcribe"},
    {
        "tool_id": "summary_review",
        "prompt_text": "Focus on the numbers.",
        "params": {"length": "short"},
    },
]

# -- request bodies ------------------------------------------------------------------------------

CREATE_ACCOUNT: Any = {"name": "Lyon newsroom", "coins": 25}
CREDIT: Any = {"coins": 10, "credit_id": "invoice-2026-12-0042"}
MINT_TOKEN: Any = {"ttl_s": 3600}
RETRY_DEAD_LETTER: Any = {"operator": "alice@ops"}
CREATE_ITEM: Any = {"source": VIDEO}
TRANSCRIPT_REQUEST: Any = {"lang": "en", "embed": True}
CREATE_COLLECTION: Any = {
    "name": "Climate desk",
    "description": "Videos on the floods",
    "visibility": "private",
    "language": "en",
}
UPDATE_COLLECTION: Any = {"description": "Videos on the Rhône floods", "visibility": "public"}
ADD_COLLECTION_ITEM: Any = {"item_id": ITEM_ID}
CREATE_REPORTER: Any = {"name": "Morning brief", "description": "Summaries for the newsletter"}
UPDATE_REPORTER: Any = {"default_workflow_id": WORKFLOW_ID}
CREATE_STEP: Any = {
    "tool_id": "extract_claims",
    "prompt_text": "Only claims with a figure.",
    "params": {"max_claims": 10},
}
REPLACE_STEPS: Any = {"steps": STEPS}
CREATE_WORKFLOW: Any = {
    "name": "Summary and claims",
    "target_kind": "youtube_video",
    "steps": STEPS,
}
UPDATE_WORKFLOW: Any = {"name": "Summary and review"}
CREATE_SCHEDULE: Any = {
    "name": "Morning sweep",
    "workflow_id": WORKFLOW_ID,
    "interval_hours": 24,
    "max_age_hours": 48,
    "max_videos_per_channel": 3,
    "enabled": True,
    "collection_ids": [COLLECTION_ID],
}
UPDATE_SCHEDULE: Any = {"interval_hours": 12, "enabled": False}
ATTACH_COLLECTION: Any = {"collection_id": COLLECTION_ID}
PROCESS_REQUEST: Any = {"source": VIDEO, "workflow_id": WORKFLOW_ID}
PROCESS_COLLECTION_REQUEST: Any = {
    "collection_id": COLLECTION_ID,
    "workflow_id": WORKFLOW_ID,
    "max_items": 20,
}
RUN_REQUEST: Any = {}

# -- responses -----------------------------------------------------------------------------------

ITEM_RESPONSE: Any = {
    "item": {
        "item_id": ITEM_ID,
        "source": "https://youtu.be/dQw4w9WgXcQ",
        "type": "youtube_video",
        "external_id": "dQw4w9WgXcQ",
        "created_at": "2026-12-05T03:24:52.848Z",
    }
}


COLLECTION_RESPONSE: Any = {
    "collection": {
        "collection_id": COLLECTION_ID,
        "name": "Climate desk",
        "description": "Videos on the floods",
        "visibility": "private",
        "language": "en",
        "created_at": "2026-12-05T03:24:52.858Z",
        "updated_at": "2026-12-05T03:24:52.858Z",
    }
}


REPORTER_RESPONSE: Any = {
    "reporter": {
        "reporter_id": REPORTER_ID,
        "name": "Morning brief",
        "description": "Summaries for the newsletter",
        "default_workflow_id": None,
        "created_at": "2026-12-05T03:24:52.882Z",
        "updated_at": "2026-12-05T03:24:52.882Z",
    }
}


# The steps of the example workflow, as its responses and an execution's snapshot show them.
WORKFLOW_STEPS: Any = [
    {
        "step_id": "stp_01m923qcs8fywxjb01j1",
        "tool_id": "transcribe",
        "prompt_text": "",
        "params": {},
    },
    {
        "step_id": "stp_01m923qcs9fncpc0f2ph",
        "tool_id": "summary_review",
        "prompt_text": "Focus on the numbers.",
        "params": {"length": "short"},
    },
]


WORKFLOW_RESPONSE: Any = {
    "workflow": {
        "workflow_id": WORKFLOW_ID,
        "reporter_id": REPORTER_ID,
        "name": "Summary and claims",
        "target_kind": "youtube_video",
        "steps": WORKFLOW_STEPS,
        "created_at": "2026-12-05T03:24:52.904Z",
        "updated_at": "2026-12-05T03:24:52.904Z",
    }
}


SCHEDULE_RESPONSE: Any = {
    "schedule": {
        "schedule_id": "sch_01m923qcsf8890cwcybk",
        "reporter_id": REPORTER_ID,
        "name": "Daily",
        "workflow_id": WORKFLOW_ID,
        "interval_hours": 24,
        "max_age_hours": 168,
        "max_videos_per_channel": 5,
        "enabled": True,
        "collection_ids": [],
        "created_at": "2026-12-05T03:24:52.911Z",
        "updated_at": "2026-12-05T03:24:52.911Z",
    }
}


VIDEO_TARGET: Any = {  # an execution's target: the example video's item
    "kind": "youtube_video",
    "item_id": ITEM_ID,
    "collection_id": None,
    "source": VIDEO,
    "external_id": "dQw4w9WgXcQ",
}
EXECUTION_RESPONSE: Any = {
    "execution": {
        "execution_id": "exc_p1_01m923qct383q0f7p4rg",
        "status": "pending",
        "kind": "transcript",
        "target": VIDEO_TARGET,
        "reporter_id": None,
        "created_at": "2026-12-05T03:24:52.931Z",
        "started_at": None,
        "finished_at": None,
        "updated_at": "2026-12-05T03:24:52.931Z",
        "fee_coins": 0.01,
        "cost_coins": 0.01,
        "error": None,
        "cancel_requested": False,
        "current_step": 0,
        "steps_total": 1,
        "steps_done": 0,
    }
}


# The workflow's summary step, as the execution's detail lists it and as its own detail shows it.
SUMMARY_INPUT: Any = {
    "prompt": "Focus on the numbers.\n"
    "\n"
    "Good morning. The river rose two metres overnight in Lyon. City officials say three "
    "hundred homes were evacuated before dawn.",
    "model": "sim-1",
    "max_tokens": 800,
    "system": "You summarise video transcripts for a newsroom. Write a summary of about 80 "
    "words, then a short review: what is well supported, what is asserted without evidence, "
    "and what is missing. Plain text, no preamble.",
}
SUMMARY_TEXT = (
    "The Rhône flooded parts of Lyon overnight; officials report 300 homes evacuated. Review: "
    "the rise of two metres is attributed to no gauge, and the evacuation figure comes from "
    "officials alone."
)


def _summary_step(*, given: Any, output: Any, **last: Any) -> Any:
    """The summary step with its own input (``given``), ``output`` and ``last`` field (the
    execution detail's ``cut``, the step detail's ``errors``)."""
    return {
        "step_index": 1,
        "step_id": "stp_01m923qcs9fncpc0f2ph",
        "tool_id": "summary_review",
        "status": "done",
        "attempts": 1,
        "input": given,
        "output": output,
        "output_ref": {"sha256": SUMMARY_SHA256, "size": 1379, "content_type": "application/json"},
        "usage": {"prompt_tokens": 176, "completion_tokens": 93},
        "cost_coins": 0.000455,
        "started_at": "2026-12-05T03:24:53.033Z",
        "finished_at": "2026-12-05T03:24:53.043Z",
        "duration_ms": 10,
        "retry_at": None,
        "error": None,
        **last,
    }


EXECUTION_DETAIL: Any = {
    "execution": {
        "execution_id": "exc_p1_01m923qctv0gfjrtyeeb",
        "status": "done",
        "kind": "process",
        "target": VIDEO_TARGET,
        "reporter_id": REPORTER_ID,
        "created_at": "2026-12-05T03:24:52.955Z",
        "started_at": "2026-12-05T03:24:53.010Z",
        "finished_at": "2026-12-05T03:24:53.043Z",
        "updated_at": "2026-12-05T03:24:53.043Z",
        "fee_coins": 0.01,
        "cost_coins": 0.013355,
        "error": None,
        "cancel_requested": False,
        "current_step": None,
        "steps_total": 2,
        "steps_done": 2,
    },
    "workflow": {
        "workflow_id": WORKFLOW_ID,
        "name": "Summary and claims",
        "target_kind": "youtube_video",
        "steps": WORKFLOW_STEPS,
        "reporter_id": REPORTER_ID,
    },
    "steps": [
        {
            "step_index": 0,
            "step_id": "stp_01m923qcs8fywxjb01j1",
            "tool_id": "transcribe",
            "status": "done",
            "attempts": 1,
            "input": {
                "item_id": ITEM_ID,
                "item_type": "youtube_video",
                "source": "https://youtu.be/dQw4w9WgXcQ",
                "external_id": "dQw4w9WgXcQ",
                "duration_s": 29,
            },
            "output": {
                "kind": "transcript",
                "item_id": ITEM_ID,
                "lang": "en",
                "chars": 125,
                "segments": 3,
                "sha256": TRANSCRIPT_SHA256,
            },
            "output_ref": {
                "sha256": TRANSCRIPT_SHA256,
                "size": 1292,
                "content_type": "application/json",
            },
            "usage": {"audio_seconds": 29},
            "cost_coins": 0.0029,
            "started_at": "2026-12-05T03:24:53.010Z",
            "finished_at": "2026-12-05T03:24:53.033Z",
            "duration_ms": 23,
            "retry_at": None,
            "error": None,
            "cut": None,
        },
        _summary_step(
            given={**SUMMARY_INPUT, "prompt_chars": 148},
            output={
                "kind": "summary",
                "item_id": ITEM_ID,
                "model": "sim-1",
                "chars": 192,
                "excerpt": SUMMARY_TEXT,
                "transcript_sha256": TRANSCRIPT_SHA256,
                "transcript_chars": 125,
                "sha256": SUMMARY_SHA256,
            },
            cut=None,
        ),
    ],
    "step_inputs": [],
}


EXECUTION_LIST: Any = {
    "executions": [
        EXECUTION_DETAIL["execution"],  # the detail's execution, listed
        {  # the transcript accepted above (EXECUTION_RESPONSE), done since
            **EXECUTION_RESPONSE["execution"],
            "status": "done",
            "started_at": "2026-12-05T03:24:53.010Z",
            "finished_at": "2026-12-05T03:24:53.033Z",
            "updated_at": "2026-12-05T03:24:53.033Z",
            "cost_coins": 0.0129,
            "current_step": None,
            "steps_done": 1,
        },
    ],
    "next_cursor": None,
}


TRANSCRIPT_RESPONSE: Any = {
    "transcript": {
        "item_id": ITEM_ID,
        "lang": "en",
        "text": "Good morning. The river rose two metres overnight in Lyon. City "
        "officials say three hundred homes were evacuated before dawn.",
        "segments": [
            {"start": 0.0, "end": 1.2, "text": "Good morning."},
            {"start": 1.2, "end": 4.6, "text": "The river rose two metres overnight in Lyon."},
            {
                "start": 4.6,
                "end": 8.9,
                "text": "City officials say three hundred homes were evacuated before dawn.",
            },
        ],
        "embedding": None,
        "execution_id": "exc_p1_01m923qctv0gfjrtyeeb",
        "created_at": "2026-12-05T03:24:53.033Z",
    }
}


STEP_RESPONSE: Any = {
    "step": _summary_step(
        given=SUMMARY_INPUT,
        output={
            "kind": "summary",
            "item_id": ITEM_ID,
            "lang": "en",
            "model": "sim-1",
            "length": "short",
            "text": SUMMARY_TEXT,
            "instructions": "Focus on the numbers.",
            "transcript": {"sha256": TRANSCRIPT_SHA256},
        },
        errors=[],
    )
}


ACCOUNT_RESPONSE: Any = {
    "account": {
        "account_id": "acc_01m923qcpb4rmpk6zm85",
        "name": "alice",
        "balance_coins": 0.969745,
    }
}


DOCUMENT_RESPONSE: Any = {
    "document": {
        "document_id": "doc_01m923qctvpr109wy001",
        "kind": "summary",
        "item_id": ITEM_ID,
        "reporter_id": REPORTER_ID,
        "execution_id": "exc_p1_01m923qctv0gfjrtyeeb",
        "title": "Summary and claims: step 1 (summary_review)",
        "size": 1379,
        "created_at": "2026-12-05T03:24:53.041Z",
        "content": {
            "kind": "summary",
            "item_id": ITEM_ID,
            "lang": "en",
            "model": "sim-1",
            "length": "short",
            "text": "The Rhône flooded parts of Lyon overnight; officials report "
            "300 homes evacuated. Review: the rise of two metres is "
            "attributed to no gauge, and the evacuation figure comes "
            "from officials alone.",
            "instructions": "Focus on the numbers.",
            "transcript": {"sha256": TRANSCRIPT_SHA256},
            "sent": {
                "prompt": "Focus on the numbers.\n"
                "\n"
                "Good morning. The river rose two metres "
                "overnight in Lyon. City officials say three "
                "hundred homes were evacuated before dawn.",
                "model": "sim-1",
                "max_tokens": 800,
                "system": "You summarise video transcripts for a newsroom. "
                "Write a summary of about 80 words, then a short "
                "review: what is well supported, what is asserted "
                "without evidence, and what is missing. Plain "
                "text, no preamble.",
            },
        },
    }
}
