"""Match-quality evaluation of every content type: seeded edited copies, distractors, µAP.

`core` holds what every content type shares (queries, the two matchers, pooled rankings),
`report` writes one report, and `photo`, `video`, `audio` and `text` each load their material
and make its seeded queries. `mediamatch eval` runs them all and writes one report."""

from .core import (
    Candidate,
    EvalResult,
    LocalMatcher,
    Material,
    Matcher,
    Progress,
    Query,
    Ranking,
    ServiceMatcher,
    calibrated_threshold,
    evaluate_material,
)
from .photo import IMAGE_SUFFIXES, encode, evaluate, load_images, make_queries, split, thumbnail
from .report import write_report
from ..models.edits import EVAL_EDITS

__all__ = [
    "Candidate", "EVAL_EDITS", "EvalResult", "IMAGE_SUFFIXES", "LocalMatcher", "Material", "Matcher", "Progress", "Query", "Ranking",
    "ServiceMatcher", "calibrated_threshold", "encode", "evaluate", "evaluate_material", "load_images", "make_queries",
    "split", "thumbnail", "write_report",
]
