"""Exec: the one subprocess wrapper every external tool goes through (qemu-img, qemu-nbd, …).

Nothing else in e3backup calls `subprocess`.
"""
