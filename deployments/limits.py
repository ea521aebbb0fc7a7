"""The cluster's rate limits: one replica holding every team's token bucket, which the ingress
replicas lease tokens from (platform/auth.py's SharedRateLimiter)."""

from __future__ import annotations

from ray import serve

from mediamatch.platform.auth import TokenBuckets


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class RateLimits:
    def __init__(self):
        self.buckets = TokenBuckets()

    async def take(self, team: str, rate: float, burst: int, want: int) -> tuple[int, float]:
        return self.buckets.take(team, rate, burst, want)  # on the replica's event loop: no lock needed
