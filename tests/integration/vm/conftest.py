"""VM tests: real QEMU guests (TCG), real QMP and guest agent; nothing is mocked."""

from __future__ import annotations

from fixtures.vm import guest_image, make_vm

__all__ = ["guest_image", "make_vm"]
