"""How each fake provider speaks: its routes, its key header, its error bodies, its payloads.

Cohere's payloads stay in ``app.Simulation`` (unchanged); this module holds the other five.
Field names, units and shapes follow the samples in ``tests/fixtures/providers/`` (from the
official SDKs): unix seconds at OpenAI, Azure and Mistral, ISO-8601 ``Z`` strings with
milliseconds at Together, RFC 3339 with microseconds at Fireworks. Message texts and ids
are made up. A job other than Cohere's exists from its first scripted status on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from watcher.simulator.scenario import (
    FAILURE_STATUSES,
    OUTCOMES,
    SUCCESS_STATUSES,
    TERMINAL_STATUSES,
)

Seconds = float
Json = dict[str, Any]

FUTURE_SHIFT: Final = timedelta(days=3653)  # "ten years ahead"
OPENAI_DEFAULT_LIMIT: Final = 20
MISTRAL_DEFAULT_PAGE_SIZE: Final = 100
FIREWORKS_DEFAULT_PAGE_SIZE: Final = 50
FIREWORKS_MAX_PAGE_SIZE: Final = 200
SIM_ORG: Final = "org-sim"

#: The status an ``unknown_status`` fault reports, in each provider's style.
UNKNOWN_STATUSES: Final[dict[str, str]] = {
    "cohere": "STATUS_SOMETHING_NEW",
    "openai": "something_new",
    "azure-openai": "something_new",
    "mistral": "SOMETHING_NEW",
    "together": "something_new",
    "fireworks": "JOB_STATE_SOMETHING_NEW",
}
_DEFAULT_ERROR_CODES: Final[dict[str, str]] = {
    "openai": "invalid_training_file",
    "azure-openai": "invalidTrainingFile",
    "together": "job_error",
    "fireworks": "INVALID_ARGUMENT",
}
DEFAULT_FAILURE_MESSAGE: Final = "The job failed (simulated): the training file is not valid JSONL."
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
_FIREWORKS_TOKEN = re.compile(r"^fw:(\d{1,9}):(\d{1,4})$")


class BadRequest(Exception):
    """A request parameter the provider would refuse: answered with ``status`` in its shape."""

    def __init__(self, message: str, *, status: int = 400, body: Json | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


# --- Models --------------------------------------------------------------------------------


@dataclass(slots=True)
class SimModel:
    """A model (a job) as served: absolute sim times of its events, never decreasing."""

    id: str
    name: str
    base_model: str
    added_at: Seconds
    times: Sequence[Seconds]
    statuses: Sequence[str]
    equal_timestamps: bool = False
    metrics: Mapping[str, float] | None = None
    outcome_index: int | None = None  # first READY/FAILED event: Cohere's metrics appear then
    provider: str = "cohere"
    error_message: str | None = None
    error_code: str | None = None
    position: int = 0  # order of addition
    _events: list[Note] | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        *,
        model_id: str,
        name: str,
        base_model: str,
        added_at: Seconds,
        times: Sequence[Seconds],
        statuses: Sequence[str],
        equal_timestamps: bool = False,
        metrics: Mapping[str, float] | None = None,
        provider: str = "cohere",
        error_message: str | None = None,
        error_code: str | None = None,
    ) -> SimModel:
        outcome = next((i for i, s in enumerate(statuses) if s in OUTCOMES), None)
        return cls(
            model_id,
            name,
            base_model,
            added_at,
            times,
            statuses,
            equal_timestamps,
            metrics,
            outcome,
            provider,
            error_message,
            error_code,
        )

    def visible(self, now: Seconds) -> int:
        """How many events have happened by ``now`` (they are the first ones)."""
        return bisect_right(self.times, now)

    def time_of(self, index: int) -> Seconds:
        return self.times[0] if self.equal_timestamps else self.times[index]

    def first_index(self, statuses: frozenset[str], happened: int) -> int | None:
        return next((i for i in range(happened) if self.statuses[i] in statuses), None)

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.provider}/{self.id}".encode()).hexdigest()

    def notes(self, make: Callable[[SimModel], list[Note]]) -> list[Note]:
        """The message events of this job (built once), in ascending order."""
        if self._events is None:
            self._events = make(self)
        return self._events


@dataclass(frozen=True, slots=True)
class Note:
    """One message event derived from the timeline: visible once entry ``index`` happened."""

    index: int
    seq: int
    kind: str  # OpenAI ``type`` (message|metrics) or Together's event ``type``
    level: str
    message: str
    data: Json = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class View:
    """What a payload builder may read of the simulation."""

    now: Seconds
    start: datetime
    page_cap: int
    fireworks_account: str
    kinds: frozenset[str]

    def moment(self, seconds: Seconds) -> datetime:
        return self.start + timedelta(seconds=seconds)

    def unix(self, seconds: Seconds) -> int:
        return int((self.start + timedelta(seconds=seconds)).timestamp())

    def future_unix(self) -> int:
        return int((self.moment(self.now) + FUTURE_SHIFT).timestamp())

    def iso(self, seconds: Seconds, *, digits: int, future: bool = False) -> str:
        moment = self.moment(self.now) + FUTURE_SHIFT if future else self.moment(seconds)
        text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        fraction = f"{moment.microsecond:06d}"[:digits]
        return f"{text}.{fraction}" + ("" if "naive_timestamp" in self.kinds else "Z")


def int_param(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None


def cursor_page(
    ids: Sequence[str], after: str, size: int, *, endless: bool, repeat: bool
) -> tuple[list[int], bool]:
    """OpenAI's cursor: items after the one whose id is ``after``; and ``has_more``."""
    total = len(ids)
    start = 0
    if after and not repeat:
        try:
            start = list(ids).index(after) + 1
        except ValueError:
            start = total  # an unknown cursor: nothing after it (unverified)
    if endless:
        if total == 0:
            return [], True
        start %= total
        return [(start + k) % total for k in range(min(size, total))], True
    stop = min(start + size, total)
    return list(range(start, stop)), repeat or stop < total


# --- OpenAI and Azure OpenAI (v1) ----------------------------------------------------------


def _openai_notes(model: SimModel) -> list[Note]:
    azure = model.provider == "azure-openai"
    notes: list[Note] = []

    def add(index: int, message: str, *, level: str = "info", kind: str = "message",
            data: Json | None = None) -> None:  # fmt: skip
        notes.append(Note(index, len(notes), kind, level, message, data or {}))

    training_file = f"file-{model.digest[:24]}"
    for index, status in enumerate(model.statuses):
        if index == 0:
            add(index, "Job enqueued. Waiting for jobs ahead to complete." if azure
                else f"Created fine-tuning job: {model.id}")  # fmt: skip
        if status == "validating_files":
            add(index, f"Validating training file: {training_file}")
        elif status in ("queued", "pending", "created", "notRunning") and index:
            add(index, "Files validated, moving job to queued state")
        elif status == "running":
            add(index, "Job started." if azure else "Fine-tuning job started")
        elif status == "pausing":
            add(index, "Pausing fine-tuning job")
        elif status == "paused":
            add(index, "Fine-tuning job paused")
        elif status == "succeeded":
            if model.metrics:
                loss = model.metrics.get("loss", next(iter(model.metrics.values())))
                add(index, f"Step 300/300: training loss={loss:g}", kind="metrics",
                    data={"step": 300, "total_steps": 300, "train_loss": loss})  # fmt: skip
            add(index, "New fine-tuned model created")
            add(index, "The job has successfully completed")
        elif status == "failed":
            add(index, model.error_message or DEFAULT_FAILURE_MESSAGE, level="error")
        elif status in ("cancelled", "canceled"):
            add(index, "The job was cancelled")
        elif index and status not in ("queued", "pending", "created", "notRunning"):
            add(index, f"Job status changed to {status}")
    return notes


def _openai_event_id(model: SimModel, note: Note) -> str:
    if model.provider == "azure-openai":
        return f"ftevent-{model.digest[:28]}{note.seq:04d}"
    return f"ftevent-{model.digest[:20]}{note.seq:04d}"


def _openai_fine_tuned_model(model: SimModel) -> str:
    suffix = model.name
    if model.provider == "azure-openai":
        return f"{model.base_model}.ft-{model.digest[:32]}-{suffix}"
    return f"ft:{model.base_model}:{SIM_ORG}:{suffix}:{model.digest[:8]}"


def openai_job(model: SimModel, view: View) -> Json:
    """``FineTuningJob`` (OpenAI and Azure v1)."""
    happened = model.visible(view.now)
    status = model.statuses[happened - 1]
    provider = model.provider
    kinds = view.kinds
    if "unknown_status" in kinds:
        status = "something_new"
    terminal = TERMINAL_STATUSES[provider]
    created = view.unix(model.time_of(0))
    finished_index = model.first_index(terminal, happened)
    finished = view.unix(model.time_of(finished_index)) if finished_index is not None else None
    if "future_timestamp" in kinds:
        if finished is not None:
            finished = view.future_unix()
        else:
            created = view.future_unix()
    if "missing_fields" in kinds:
        return {"id": model.id, "object": "fine_tuning.job", "status": status}
    succeeded = status in SUCCESS_STATUSES[provider]
    failed = status in FAILURE_STATUSES[provider]
    estimated: int | None = None
    if status == "running":
        upcoming = next((i for i in range(happened, len(model.statuses))
                         if model.statuses[i] in terminal), None)  # fmt: skip
        if upcoming is not None:
            estimated = view.unix(model.time_of(upcoming))
    hyperparameters = {"batch_size": 4, "learning_rate_multiplier": 1.8, "n_epochs": 3}
    error: Json | None = None
    if failed:
        error = {
            "code": model.error_code or _DEFAULT_ERROR_CODES[provider],
            "message": model.error_message or DEFAULT_FAILURE_MESSAGE,
            "param": "training_file",
        }
    return {
        "id": model.id,
        "object": "fine_tuning.job",
        "created_at": created,
        "error": error,
        "fine_tuned_model": _openai_fine_tuned_model(model) if succeeded else None,
        "finished_at": finished,
        "hyperparameters": hyperparameters,
        "model": model.base_model,
        "organization_id": "" if provider == "azure-openai" else SIM_ORG,
        "result_files": [f"file-{model.digest[24:48]}"] if succeeded else [],
        "seed": 42,
        "status": status,
        "trained_tokens": 123456 if succeeded else None,
        "training_file": f"file-{model.digest[:24]}",
        "validation_file": None,
        "estimated_finish": estimated,
        "integrations": [],
        "metadata": None,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        "user_provided_suffix": model.name,
    }


def openai_events(model: SimModel, view: View, query: Mapping[str, str]) -> Json:
    """``{object: list, data: [FineTuningJobEvent], has_more}``, newest first."""
    happened = model.visible(view.now)
    notes = [n for n in model.notes(_openai_notes) if n.index < happened]
    notes.reverse()  # newest first; ties keep the later event first
    limit = int_param(query, "limit", OPENAI_DEFAULT_LIMIT)
    if limit < 1:
        raise BadRequest("limit must be at least 1")
    size = min(limit, view.page_cap)
    ids = [_openai_event_id(model, n) for n in notes]
    positions, has_more = cursor_page(
        ids,
        query.get("after", ""),
        size,
        endless="endless_pages" in view.kinds,
        repeat="repeat_token" in view.kinds,
    )
    data: list[Json] = []
    for position in positions:
        note = notes[position]
        created = view.unix(model.time_of(note.index))
        if "future_timestamp" in view.kinds and position == 0:
            created = view.future_unix()
        data.append(
            {
                "object": "fine_tuning.job.event",
                "id": ids[position],
                "created_at": created,
                "level": note.level,
                "message": note.message,
                "data": dict(note.data),
                "type": note.kind,
            }
        )
    if "missing_fields" in view.kinds:
        return {"object": "list", "data": data}
    return {"object": "list", "data": data, "has_more": has_more}


def openai_list(models: Sequence[SimModel], view: View, query: Mapping[str, str]) -> Json:
    """The job list, newest first, with OpenAI's cursor."""
    jobs = _newest_first([m for m in models if m.visible(view.now)])
    limit = int_param(query, "limit", OPENAI_DEFAULT_LIMIT)
    if limit < 1:
        raise BadRequest("limit must be at least 1")
    positions, has_more = cursor_page(
        [m.id for m in jobs],
        query.get("after", ""),
        min(limit, view.page_cap),
        endless="endless_pages" in view.kinds,
        repeat="repeat_token" in view.kinds,
    )
    data = [openai_job(jobs[p], view) for p in positions]
    if "missing_fields" in view.kinds:
        return {"object": "list", "data": data}
    return {"object": "list", "data": data, "has_more": has_more}


def _newest_first(models: Sequence[SimModel]) -> list[SimModel]:
    return sorted(models, key=lambda m: (m.added_at + m.times[0], m.position), reverse=True)


# --- Mistral (legacy fine-tuning jobs API) -------------------------------------------------


def mistral_job(model: SimModel, view: View, *, details: bool = True) -> Json:
    """``CompletionFineTuningJobDetails`` (with ``events`` and ``checkpoints``) or a list item."""
    happened = model.visible(view.now)
    status = model.statuses[happened - 1]
    kinds = view.kinds
    events: list[Json] = []
    for index in range(happened):
        event: Json = {"name": "status-updated"}
        if "missing_fields" not in kinds:  # documented: status-updated events without data
            event["data"] = {"status": model.statuses[index]}
        event["created_at"] = view.unix(model.time_of(index))
        events.append(event)
    modified = view.unix(model.time_of(happened - 1))
    if "unknown_status" in kinds:
        status = "SOMETHING_NEW"
        modified = view.unix(view.now)
        events.append({"name": "status-updated", "data": {"status": status},
                       "created_at": modified})  # fmt: skip
    if "future_timestamp" in kinds:
        modified = view.future_unix()
        events[-1]["created_at"] = modified
    events.reverse()  # newest first
    succeeded = status in SUCCESS_STATUSES["mistral"]
    digest = model.digest
    answer: Json = {
        "id": model.id,
        "auto_start": True,
        "model": model.base_model,
        "status": status,
        "job_type": "completion",
        "created_at": view.unix(model.time_of(0)),
        "modified_at": modified,
        "training_files": [_uuid(digest[:32])],
        "validation_files": [],
        "object": "job",
        "fine_tuned_model": (
            f"ft:{model.base_model}:{digest[:8]}:{view.moment(model.time_of(0)):%Y%m%d}:"
            f"{model.id[:8]}"
            if succeeded
            else None
        ),
        "suffix": model.name,
        "integrations": [],
        "trained_tokens": 13107200 if succeeded else None,
        "repositories": [],
        "metadata": {
            "expected_duration_seconds": 3600,
            "cost": 2.62,
            "cost_currency": "USD",
            "train_tokens_per_step": 131072,
            "train_tokens": 13107200,
            "data_tokens": 30344845,
            "estimated_start_time": None,
        },
        "hyperparameters": {
            "training_steps": 100,
            "learning_rate": 0.0001,
            "weight_decay": 0.1,
            "warmup_fraction": 0.05,
            "epochs": 1.2,
            "seq_len": 32768,
            "fim_ratio": None,
        },
    }
    if not details:
        return answer
    checkpoints: list[Json] = []
    if succeeded and model.metrics:
        checkpoints.append(
            {
                "metrics": {
                    "train_loss": model.metrics.get("loss"),
                    "valid_loss": model.metrics.get("valid_loss"),
                    "valid_mean_token_accuracy": model.metrics.get("accuracy"),
                },
                "step_number": 100,
                "created_at": modified,
            }
        )
    answer["events"] = events
    answer["checkpoints"] = checkpoints
    return answer


def mistral_list(models: Sequence[SimModel], view: View, query: Mapping[str, str]) -> Json:
    """``{object: list, data, total}``: ``page`` from 0, ``page_size`` (default 100)."""
    page = _mistral_int(query, "page", 0)
    size = _mistral_int(query, "page_size", MISTRAL_DEFAULT_PAGE_SIZE)
    if page < 0 or size < 1:
        name = "page" if page < 0 else "page_size"
        raise BadRequest(
            f"{name} out of range", status=422, body=_mistral_422(name, "greater_than_equal")
        )
    size = min(size, view.page_cap)
    jobs = _newest_first([m for m in models if m.visible(view.now)])
    total = len(jobs)
    start = page * size
    if "repeat_token" in view.kinds:
        start = 0  # every page is the first one
    if "endless_pages" in view.kinds and total:
        positions = [(start + k) % total for k in range(min(size, total))]
        total = max(total, start + 2 * size)  # the total keeps growing ahead of the client
    else:
        positions = list(range(start, min(start + size, total)))
    data = [mistral_job(jobs[p], view, details=False) for p in positions]
    if "missing_fields" in view.kinds:
        return {"object": "list", "data": data}
    return {"object": "list", "data": data, "total": total}


def _mistral_int(query: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int_param(query, name, default)
    except BadRequest:
        raise BadRequest(
            f"{name} must be an integer", status=422, body=_mistral_422(name, "int_parsing")
        ) from None


def _mistral_422(name: str, kind: str) -> Json:
    message = (
        "Input should be a valid integer, unable to parse string as an integer"
        if kind == "int_parsing"
        else "Input should be greater than or equal to 0"
    )
    return {"detail": [{"type": kind, "loc": ["query", name], "msg": message, "input": None}]}


def mistral_unknown_id(job_id: str) -> tuple[int, Json]:
    """An id nobody scripted: 422 when it is no UUID (FastAPI's check), else 404."""
    if _UUID.match(job_id):
        return 404, {"detail": "Job not found"}
    return 422, {
        "detail": [
            {
                "type": "uuid_parsing",
                "loc": ["path", "job_id"],
                "msg": "Input should be a valid UUID, invalid character: expected an optional "
                "prefix of `urn:uuid:` followed by [0-9a-fA-F-]",
                "input": job_id,
            }
        ]
    }


def _uuid(hex32: str) -> str:
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:32]}"


# --- Together ------------------------------------------------------------------------------

_TOGETHER_NOTES: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "running": (("job_start", "Job started"), ("training_start", "Training started")),
    "compressing": (("model_compressing", "Compressing output model"),),
    "uploading": (("model_uploading", "Uploading output model"),),
    "cancel_requested": (("cancel_requested", "Cancel requested by the user"),),
    "completed": (
        ("model_upload_complete", "Model upload complete"),
        ("job_complete", "Job finished"),
    ),
    "cancelled": (("job_stopped", "Job was cancelled by the user"),),
}


def _together_notes(model: SimModel) -> list[Note]:
    notes: list[Note] = []
    for index, status in enumerate(model.statuses):
        if index == 0:
            notes.append(
                Note(index, len(notes), "job_pending", "info", "Fine tune request created")
            )
        if status in ("error", "user_error"):
            kind = "job_error" if status == "error" else "job_user_error"
            message = model.error_message or DEFAULT_FAILURE_MESSAGE
            notes.append(Note(index, len(notes), kind, "error", message))
            continue
        for kind, message in _TOGETHER_NOTES.get(status, ()):
            notes.append(Note(index, len(notes), kind, "info", message))
    return notes


def _together_events(model: SimModel, view: View) -> list[Json]:
    happened = model.visible(view.now)
    notes = [n for n in model.notes(_together_notes) if n.index < happened]
    events: list[Json] = []
    for number, note in enumerate(notes):
        future = "future_timestamp" in view.kinds and number == len(notes) - 1
        event: Json = {
            "object": "fine-tune-event",
            "created_at": view.iso(model.time_of(note.index), digits=3, future=future),
        }
        if "missing_fields" not in view.kinds:
            event["level"] = note.level
        event.update(
            {
                "message": note.message,
                "type": note.kind,
                "param_count": 0,
                "token_count": 0,
                "wandb_url": "",
                "step": 0,
                "total_steps": 0,
                "checkpoint_path": "",
                "model_path": "",
            }
        )
        events.append(event)
    return events  # oldest first, as the samples


def together_job(model: SimModel, view: View, *, details: bool = True) -> Json:
    """``FinetuneResponse`` (with ``events``) or a list item (with ``suffix``)."""
    happened = model.visible(view.now)
    status = model.statuses[happened - 1]
    kinds = view.kinds
    if "unknown_status" in kinds:
        status = "something_new"
    future = "future_timestamp" in kinds
    updated = view.iso(model.time_of(happened - 1), digits=3, future=future)
    if "missing_fields" in kinds:
        return {"id": model.id, "status": status}
    started_index = model.first_index(frozenset({"running"}), happened)
    completed = status in SUCCESS_STATUSES["together"]
    answer: Json = {
        "id": model.id,
        "status": status,
        "user_id": "u-sim",
        "created_at": view.iso(model.time_of(0), digits=3),
        "updated_at": updated,
        "started_at": (
            view.iso(model.time_of(started_index), digits=3) if started_index is not None else None
        ),
        "model": model.base_model,
        "model_output_name": f"sim/{model.base_model.rsplit('/', 1)[-1]}-{model.name}",
        "model_output_path": f"s3://together-sim-output/{model.id}/output" if completed else None,
        "training_file": f"file-{_uuid(model.digest[:32])}",
        "validation_file": "",
        "n_epochs": 3,
        "n_checkpoints": 1,
        "n_evals": 0,
        "batch_size": 8,
        "learning_rate": 1e-05,
        "warmup_ratio": 0.0,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "lr_scheduler": {
            "lr_scheduler_type": "cosine",
            "lr_scheduler_args": {"min_lr_ratio": 0.0, "num_cycles": 0.5},
        },
        "training_type": {
            "type": "Lora",
            "lora_r": 8,
            "lora_alpha": 16,
            "lora_dropout": 0.0,
            "lora_trainable_modules": "all-linear",
        },
        "training_method": {"method": "sft", "train_on_inputs": "auto"},
        "token_count": 1048576,
        "param_count": 8030261248,
        "total_price": 1500000000,  # nano-dollars
        "epochs_completed": 3 if completed else 0,
        "queue_depth": 0,
        "progress": _together_progress(model, view, happened, status),
        "wandb_url": None,
    }
    if details:
        answer["events"] = _together_events(model, view)
    else:
        answer["suffix"] = model.name
    return answer


def _together_progress(model: SimModel, view: View, happened: int, status: str) -> Json:
    """How long until the scripted end, while running (the job's estimate)."""
    terminal = TERMINAL_STATUSES["together"]
    if status in terminal:
        return {"estimate_available": False, "seconds_remaining": 0}
    end = next((i for i in range(happened, len(model.statuses))
                if model.statuses[i] in terminal), None)  # fmt: skip
    if end is None or status != "running":
        return {"estimate_available": False, "seconds_remaining": 0}
    remaining = max(0, int(model.time_of(end) - view.now))
    return {"estimate_available": True, "seconds_remaining": remaining}


def together_events(model: SimModel, view: View) -> Json:
    return {"data": _together_events(model, view)}


def together_list(models: Sequence[SimModel], view: View) -> Json:
    return {"data": [together_job(m, view, details=False) for m in models if m.visible(view.now)]}


# --- Fireworks -----------------------------------------------------------------------------


def fireworks_job(model: SimModel, view: View) -> Json:
    """``SupervisedFineTuningJob``: the current ``state`` and ``status {code, message}``."""
    happened = model.visible(view.now)
    state = model.statuses[happened - 1]
    kinds = view.kinds
    if "unknown_status" in kinds:
        state = "JOB_STATE_SOMETHING_NEW"
    account = view.fireworks_account
    name = f"accounts/{account}/supervisedFineTuningJobs/{model.id}"
    future = "future_timestamp" in kinds
    if "missing_fields" in kinds:
        return {"name": name, "state": state}
    status = {"code": "OK", "message": ""}
    if state in FAILURE_STATUSES["fireworks"]:
        status = {
            "code": model.error_code or _DEFAULT_ERROR_CODES["fireworks"],
            "message": model.error_message or DEFAULT_FAILURE_MESSAGE,
        }
    running = model.first_index(frozenset({"JOB_STATE_RUNNING"}), happened)
    terminal = TERMINAL_STATUSES["fireworks"]
    done = model.first_index(terminal, happened)
    progress: Json = {}
    if state in SUCCESS_STATUSES["fireworks"]:
        progress = {"percent": 100, "epoch": 2}
    elif running is not None:
        end = next((i for i in range(happened, len(model.statuses))
                    if model.statuses[i] in terminal), None)  # fmt: skip
        percent = 0
        if end is not None:
            began, finish = model.time_of(running), model.time_of(end)
            if finish > began:
                percent = int(100 * min(1.0, max(0.0, (view.now - began) / (finish - began))))
        progress = {"percent": percent, "epoch": 0}
    answer: Json = {
        "name": name,
        "displayName": model.name,
        "dataset": f"accounts/{account}/datasets/{model.id}-train",
        "evaluationDataset": "",
        "evalAutoCarveout": True,
        "baseModel": model.base_model,
        "warmStartFrom": "",
        "outputModel": f"accounts/{account}/models/{model.id}",
        "state": state,
        "status": status,
        "createTime": view.iso(model.time_of(0), digits=6),
        "updateTime": view.iso(model.time_of(happened - 1), digits=6, future=future),
        "createdBy": "sim@example.com",
        "earlyStop": "JOB_STATE_EARLY_STOPPED" in model.statuses,
        "epochs": 3,
        "learningRate": 0.0001,
        "loraRank": 8,
        "maxContextLength": 8192,
        "batchSize": 32768,
        "isTurbo": False,
        "region": "US_VIRGINIA_1",
        "jobProgress": progress,
    }
    if done is not None and state in terminal:
        answer["completedTime"] = view.iso(model.time_of(done), digits=6, future=future)
    return answer


def fireworks_token(index: int, size: int) -> str:
    return base64.urlsafe_b64encode(f"fw:{index}:{size}".encode()).decode().rstrip("=")


def _fireworks_start(token: str, size: int) -> int:
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise BadRequest("invalid page token") from None
    match = _FIREWORKS_TOKEN.match(raw)
    if match is None:
        raise BadRequest("invalid page token")
    if int(match.group(2)) != size:
        raise BadRequest("page_size must not change between pages of one listing")
    return int(match.group(1))


def fireworks_list(models: Sequence[SimModel], view: View, query: Mapping[str, str]) -> Json:
    """``{supervisedFineTuningJobs, nextPageToken}`` ordered by name; ``pageSize``/``pageToken``."""
    asked = int_param(query, "pageSize", 0)
    if asked < 0:
        raise BadRequest("pageSize must not be negative")
    size = min(asked or FIREWORKS_DEFAULT_PAGE_SIZE, FIREWORKS_MAX_PAGE_SIZE, view.page_cap)
    start = _fireworks_start(query.get("pageToken", ""), size)
    jobs = sorted((m for m in models if m.visible(view.now)), key=lambda m: m.id)
    total = len(jobs)
    if "endless_pages" in view.kinds and total:
        positions = [(start + k) % total for k in range(min(size, total))]
        token = fireworks_token(start + size, size)
    else:
        stop = min(start + size, total)
        positions = list(range(start, stop))
        token = fireworks_token(stop, size) if stop < total else ""
    if "repeat_token" in view.kinds:
        token = fireworks_token(0, size)
    answer: Json = {"supervisedFineTuningJobs": [fireworks_job(jobs[p], view) for p in positions]}
    if "missing_fields" not in view.kinds:
        answer["nextPageToken"] = token
    return answer


# --- Errors in each provider's own shape ---------------------------------------------------

_GRPC: Final[dict[int, tuple[int, str]]] = {
    400: (3, "INVALID_ARGUMENT"),
    401: (16, "UNAUTHENTICATED"),
    403: (7, "PERMISSION_DENIED"),
    404: (5, "NOT_FOUND"),
    405: (12, "UNIMPLEMENTED"),
    429: (8, "RESOURCE_EXHAUSTED"),
    500: (13, "INTERNAL"),
    503: (14, "UNAVAILABLE"),
}
_OPENAI_TYPES: Final[dict[int, tuple[str, str | None]]] = {
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}
_AZURE_CODES: Final[dict[int, str]] = {
    400: "BadRequest",
    403: "PermissionDenied",
    404: "notFound",
    405: "MethodNotAllowed",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}

#: Each provider's usual message for a status (used when the caller gives none).
DEFAULT_MESSAGES: Final[dict[str, dict[int, str]]] = {
    "openai": {
        401: "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        403: "Your organization does not have access to fine-tuning.",
        429: "Rate limit reached for requests. Please try again in 2s.",
        500: "The server had an error while processing your request. Sorry about that!",
        503: "The engine is currently overloaded, please try again later.",
    },
    "azure-openai": {
        401: "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
        "provide a valid key for an active subscription and use a correct regional API "
        "endpoint for your resource.",
        403: "The principal does not have access to this resource.",
        429: "Requests to the Fine-tuning Operation under Azure OpenAI API have exceeded call "
        "rate limit of your current pricing tier. Please retry after 2 seconds.",
        500: "The server had an error while processing your request.",
        503: "The service is temporarily unavailable.",
    },
    "mistral": {
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        429: "Requests rate limit exceeded",
        500: "Internal server error",
        503: "Service unavailable",
    },
    "together": {
        401: "Invalid API key provided. You can find your API key at "
        "https://api.together.ai/settings/api-keys.",
        403: "You do not have access to this resource.",
        429: "You have exceeded the rate limit. Please retry after some time.",
        500: "Internal server error",
        503: "Service unavailable",
    },
    "fireworks": {
        401: "unauthenticated: invalid API key",
        403: "permission denied",
        429: "resource exhausted: too many requests",
        500: "internal error",
        503: "service unavailable",
    },
}


def error_body(provider: str, status: int, message: str | None = None, *,
               param: str | None = None, code: str | None = None) -> Json:  # fmt: skip
    """The error document ``provider`` answers with for HTTP ``status`` (as in the samples)."""
    text = message or DEFAULT_MESSAGES.get(provider, {}).get(status) or f"HTTP {status}"
    if provider in ("openai", "together"):
        kind, default_code = _OPENAI_TYPES.get(status, ("invalid_request_error", None))
        if provider == "together" and status == 429:
            kind, default_code = "rate_limit", None
        if provider == "together" and status == 401:
            default_code = "invalid_api_key"
        return {"error": {"message": text, "type": kind, "param": param,
                          "code": code or default_code}}  # fmt: skip
    if provider == "azure-openai":
        if status in (401, 429):  # the gateway's short form
            return {"error": {"code": str(status), "message": text}}
        return {
            "error": {
                "code": code or _AZURE_CODES.get(status, str(status)),
                "message": text,
                "param": param,
                "type": "error",
                "inner_error": None,
            }
        }
    if provider == "mistral":
        if status == 429:
            return {"message": text, "request_id": hashlib.sha256(text.encode()).hexdigest()[:32]}
        return {"detail": text}
    if provider == "fireworks":
        grpc, _reason = _GRPC.get(status, (2, "UNKNOWN"))
        details: list[Json] = []
        if status == 429:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "RATE_LIMIT_EXCEEDED",
                    "domain": "fireworks.ai",
                    "metadata": {},
                }
            )
        return {"code": grpc, "message": text, "details": details}
    return {"message": text}


def not_found_body(provider: str, job_id: str, account: str) -> tuple[int, Json]:
    """The answer to a job id nobody scripted (or not created yet)."""
    if provider == "openai":
        return 404, error_body(
            provider,
            404,
            f"Could not find fine tune: {job_id}",
            param="fine_tuning_job_id",
            code="fine_tune_not_found",
        )
    if provider == "azure-openai":
        return 404, error_body(provider, 404, f"Fine-tuning job '{job_id}' not found.")
    if provider == "mistral":
        return mistral_unknown_id(job_id)
    if provider == "together":
        return 404, error_body(provider, 404, f"Fine-tune job {job_id} not found")
    name = f"accounts/{account}/supervisedFineTuningJobs/{job_id}"
    return 404, error_body(provider, 404, f"supervisedFineTuningJob {json.dumps(name)} not found")


def unknown_path_body(provider: str, method: str, path: str) -> Json:
    if provider in ("openai", "together"):
        return error_body(provider, 404, f"Invalid URL ({method} {path})")
    if provider == "azure-openai":
        return error_body(provider, 404, "Resource not found")
    if provider == "fireworks":
        return error_body(provider, 404, f"no route for {method} {path}")
    return error_body(provider, 404)


__all__ = [
    "UNKNOWN_STATUSES",
    "BadRequest",
    "Note",
    "SimModel",
    "View",
    "cursor_page",
    "error_body",
    "fireworks_job",
    "fireworks_list",
    "mistral_job",
    "mistral_list",
    "not_found_body",
    "openai_events",
    "openai_job",
    "openai_list",
    "together_events",
    "together_job",
    "together_list",
    "unknown_path_body",
]
