"""Signal deployments: compute signals of uploaded media and texts, batched across requests.

One class serves every signal type: the hasher is a `SignalComputer` of the cheap types (PDQ,
MD5, normalised text), and each model gets its own (`text_embedding` now; image, video and
audio models plug in the same way), with a GPU when the cluster has them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve

from mediamatch.platform.errors import MediamatchError
from mediamatch.platform.settings import Settings
from mediamatch.platform.signals import Signal, configure_signal_types, get_signal_type

log = logging.getLogger("ray.serve")

Item = tuple[bytes | str, str, bool, frozenset[str]]  # content, content type, whether it is to be matched (else banked), the signal types wanted
Computed = dict[str, Signal] | MediamatchError  # one item's signals, or why it has none


LOOP_CONTENT = {"photo", "text"}  # the content types a model-free computer hashes on its event loop


@serve.deployment
class SignalComputer:
    def __init__(self, settings: dict[str, Any], signal_types: list[str]):
        self.settings = Settings(**settings)
        self.types = [get_signal_type(name) for name in signal_types]
        # Hashing photos and text is short work that holds the GIL (pdqhash, PIL's Python side):
        # a thread would trade the GIL with the event loop at every switch interval (measured at 8
        # clients: 14.4 against 18.7 ms of the Hasher's CPU a photo, 52.6 against 48-50 uploads/s).
        # Models' inference releases it, and video or audio may take seconds: those go to a thread.
        self.on_loop = not any(t.needs_model for t in self.types)
        self.compute.set_max_batch_size(self.settings.serve.max_batch_size)
        self.compute.set_batch_wait_timeout_s(self.settings.serve.batch_wait_ms / 1000)
        configure_signal_types(self.settings)
        for signal_type in self.types:
            signal_type.warm_up()  # load a model now, not on the first request

    def ready(self) -> bool:
        return True

    @serve.batch
    async def compute(self, items: list[Item]) -> list[Computed]:
        if self.on_loop and all(ctype in LOOP_CONTENT for _, ctype, _, _ in items):
            return self.compute_items(items)
        return await asyncio.to_thread(self.compute_items, items)

    def compute_items(self, items: list[Item]) -> list[Computed]:
        """Each item's signals of the wanted types it has; an item that cannot be read gets its error."""
        out: list[Computed] = [{} for _ in items]
        for signal_type in self.types:
            mine = [i for i, (_, ctype, _, wanted) in enumerate(items)
                    if signal_type.name in wanted and ctype in signal_type.content_types and isinstance(out[i], dict)]
            for query in (False, True):
                group = [i for i in mine if items[i][2] == query]
                if not group:
                    continue
                for i, result in zip(group, self._batch(signal_type, [items[i][0] for i in group], query)):
                    out[i] = result if isinstance(result, MediamatchError) else {**out[i], signal_type.name: result}
        return out

    def _batch(self, signal_type, contents: list, query: bool) -> list[Signal | MediamatchError]:
        one = signal_type.compute_query if query else signal_type.compute
        try:
            if query and signal_type.query_form:
                return [one(content, self.settings.limits) for content in contents]
            return signal_type.compute_batch(contents, self.settings.limits)
        except MediamatchError:  # one bad item spoils a batch: redo one at a time
            out = []
            for content in contents:
                try:
                    out.append(one(content, self.settings.limits))
                except MediamatchError as exc:
                    out.append(exc)
            return out
