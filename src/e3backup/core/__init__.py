"""Core: the error family, ids, units and cancellation shared by every layer.

Nothing here imports from another e3backup package.
"""
