"""What a session leaves behind: one record per turn, gathered into a session record.

These models are the single shape shared by the live metrics pushed to the page, the
persistent store, the REST endpoints, the Prometheus/JSON metrics and the cost report.
"""

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

# The milestones of a turn, in order, in seconds after the end of the user's speech. A stage
# is the time between two consecutive milestones that were both reached, so stages are never
# negative and add up to the answer's time (`TurnLatency.answer`). Those up to the first bot
# audio add up to the total (server-side voice-to-voice), except in a turn whose first words
# came before its tools returned (an acknowledgement): its total is that earlier moment.
MILESTONES = (
    "vad_stop",  # the VAD reported silence (its stop_secs after the speech ended)
    "turn_end",  # the turn strategy ended the user turn (Smart Turn + final transcript)
    "llm_first_token",  # the LLM produced its first output token
    "tools_done",  # every tool call of the turn returned (only in turns with tools)
    "tts_first_audio",  # the TTS produced its first audio
    "bot_audio_sent",  # the first bot audio went out to the client
    # The first audio of the answer went out: after the turn's tool results, so words spoken
    # before them ("Let me check") are first audio but not the answer. Without tools, the same
    # moment as bot_audio_sent.
    "answer_audio_sent",
)


class TurnLatency(BaseModel):
    milestones: dict[str, float] = Field(
        default_factory=dict, description="Milestone -> seconds after the end of user speech."
    )
    stages: dict[str, float] = Field(
        default_factory=dict,
        description="Stage (named by the milestone that ends it) -> seconds; they add up to total.",
    )
    total: float | None = Field(None, description="End of user speech -> first bot audio sent.")
    answer: float | None = Field(
        None, description="End of user speech -> first audio of the answer sent (after its tools)."
    )

    @classmethod
    def from_milestones(cls, milestones: dict[str, float]) -> "TurnLatency":
        reached = [(name, milestones[name]) for name in MILESTONES if name in milestones]
        stages, previous = {}, 0.0
        for name, at in reached:
            at = max(at, previous)  # stages overlap; a milestone never moves time backwards
            stages[name] = at - previous
            previous = at
        # Words spoken before the tools returned ("Let me check") came out before tools_done.
        total = milestones.get("bot_audio_sent")
        answer = previous if "answer_audio_sent" in milestones else None
        return cls(milestones=dict(reached), stages=stages, total=total, answer=answer)


class Usage(BaseModel):
    llm_prompt_tokens: int = 0
    llm_completion_tokens: int = 0
    llm_cached_tokens: int = 0
    tts_characters: int = 0
    stt_audio_seconds: float = 0.0
    cpu_seconds: dict[str, float] = Field(
        default_factory=dict,
        description="Embedded stage -> CPU seconds its engine spent on this turn.",
    )


class Cost(BaseModel):
    components: dict[str, float] = Field(default_factory=dict, description="llm / stt / tts / transport -> US dollars.")
    total: float = 0.0


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: str | None = None
    duration_secs: float | None = None


class TurnFailure(BaseModel):
    """Why a turn failed: the stage that failed, how, and what it said."""

    stage: Literal["stt", "llm", "tts"]
    kind: Literal["error", "timeout"] = Field(
        description="error: the service reported one; timeout: it did not answer in time."
    )
    message: str


TurnStatus = Literal["completed", "interrupted", "failed"]


class TurnRecord(BaseModel):
    turn_id: str
    session_id: str
    index: int
    started_at: float = Field(default_factory=time.time, description="Unix time the turn began.")
    ended_at: float | None = None
    user_text: str = ""
    bot_text: str = ""
    status: TurnStatus = "completed"
    error: str | None = None
    # Records written before faults were classified have none (old databases stay readable).
    failure: TurnFailure | None = None
    latency: TurnLatency | None = None
    usage: Usage = Field(default_factory=Usage)
    cost: Cost = Field(default_factory=Cost)
    providers: dict[str, str] = Field(
        default_factory=dict, description="Stage -> 'provider:model', e.g. 'embedded:piper'."
    )
    tool_calls: list[ToolCall] = Field(default_factory=list)


class SessionRecord(BaseModel):
    session_id: str
    transport: str
    started_at: float
    ended_at: float | None = None
    state: Literal["starting", "active", "ending", "ended"] = "starting"
    end_reason: str | None = Field(
        None,
        description="How it ended: client_left, idle_timeout, max_duration, server_shutdown,"
        " not_joined or pipeline_ended.",
    )
    providers: dict[str, str] = Field(default_factory=dict)
    turns: list[TurnRecord] = Field(default_factory=list)
    visualizations: list[dict[str, Any]] = Field(default_factory=list)
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Process peaks while the session ran: peak_rss_bytes, peak_cpu_percent.",
    )

    @property
    def duration_secs(self) -> float:
        return (self.ended_at or time.time()) - self.started_at
