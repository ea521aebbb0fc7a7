"""Request and response bodies of the v1 HTTP API (../shared/API.md), as pydantic models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BankCreate(Strict):
    name: str
    description: str = ""
    labels: list[str] = Field(default_factory=list)
    thresholds: dict[str, float] = Field(default_factory=dict, description="per signal type, overriding the service's")


class BankPatch(Strict):
    description: str | None = None
    labels: list[str] | None = None
    enabled: bool | None = None
    thresholds: dict[str, float] | None = None


class BankOut(BaseModel):
    name: str
    description: str
    labels: list[str]
    enabled: bool
    entry_count: int
    created_at: str
    thresholds: dict[str, float] = Field(default_factory=dict)


class BankList(BaseModel):
    banks: list[BankOut]


class EntryOut(BaseModel):
    entry_id: str
    bank: str
    content_type: str
    signals: dict[str, Any]
    metadata: dict[str, Any]
    enabled: bool
    created_at: str
    labels: list[str] = Field(default_factory=list, description="the entry's own labels (an imported list's), beside its bank's")
    external_id: str | None = Field(None, description="the id a partner's list gave it")


class EntryList(BaseModel):
    entries: list[EntryOut]
    next_cursor: str | None


class EntryPatch(Strict):
    enabled: bool | None = None
    metadata: dict[str, Any] | None = None


class EntryJSON(Strict):
    """Bank a text, or signals shared without the media."""

    text: str | None = None
    signals: dict[str, Any] | None = None
    content_type: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.text is None) == (self.signals is None):
            raise ValueError("give exactly one of 'text' or 'signals'")
        return self


class HashJSON(Strict):
    text: str


class HashResult(BaseModel):
    content_type: str
    signals: dict[str, Any]
    quality: dict[str, float]


class PostPart(Strict):
    name: str | None = None
    text: str | None = None
    signals: dict[str, Any] | None = None
    content_type: str | None = None

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.text is None) == (self.signals is None):
            raise ValueError("each part gives exactly one of 'text' or 'signals'")
        return self


class Post(Strict):
    text: str | None = None
    parts: list[PostPart] = Field(default_factory=list)


class MatchJSON(Strict):
    text: str | None = None
    signals: dict[str, Any] | None = None
    post: Post | None = None
    content_type: str | None = None
    banks: list[str] | None = None
    signal_types: list[str] | None = None

    @model_validator(mode="after")
    def _one_kind(self):
        if sum(x is not None for x in (self.text, self.signals, self.post)) != 1:
            raise ValueError("give exactly one of 'text', 'signals' or 'post'")
        return self


class Match(BaseModel):
    bank: str
    entry_id: str
    signal_type: str
    distance: float
    score: float
    threshold: float
    labels: list[str]
    metadata: dict[str, Any]
    part: str | None = None
    transform: str | None = Field(None, description="the turn or flip that makes the query out of the banked item, when the signal searched a "
                                  "query's turned and flipped forms (pdq) and one of them matched: rot90, rot180, rot270 (counterclockwise), "
                                  "flipx (mirrored left-right), flipy (upside down), transpose, transverse (mirrored about a diagonal); "
                                  "null when the query as it is matched")
    evidence: dict[str, float] | None = Field(None, description="a `fused` match: each photo signal's distance that the fusion weighed "
                                              "(a signal absent here did not find the entry within its radius)")


class MatchResult(BaseModel):
    content_type: str
    signals: dict[str, Any]
    matches: list[Match]
    index_versions: dict[str, str | None]
    took_ms: float
    verdict: dict[str, Any] | None = Field(None, description="posts: whether any part matched, and which")


class ReindexRequest(Strict):
    signal_types: list[str] | None = None


class ImportAccepted(BaseModel):
    job_id: str = Field(description="GET /v1/banks/{bank}/import/{job_id} gives its state, progress and report")


class ReindexAccepted(BaseModel):
    job_id: str


class RollbackRequest(Strict):
    version: str


class SignalTypeOut(BaseModel):
    name: str
    content_types: list[str]
    index_kind: str
    unit: str
    default_threshold: float
    threshold: float
    params: dict[str, Any] | None = Field(None, description="`fused`: the calibrated fusion itself (platform/fusion.py), as stored with the model")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


JobState = Literal["pending", "running", "succeeded", "failed"]
