"""Storage: where repository objects live.

A *backend* stores immutable objects under string *keys* ("packs/ab/abcd…"); it knows nothing of
chunks, encryption or snapshots. Retry, rate limits and fault injection wrap a backend.
"""
