"""Repository: deduplicated, compressed, encrypted chunk storage on any backend.

A *chunk* is a fixed-size piece of a disk, named by its keyed BLAKE3 *chunk id*; chunks are
stored as *blobs* inside *packs*; *index* objects say which pack holds which chunk; a *snapshot*
(manifest) lists, per disk, the *pages* of chunk ids that rebuild it.
"""
