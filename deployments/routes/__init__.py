"""The HTTP surface, one router per part of the contract (../shared/API.md); the ingress mounts them."""
