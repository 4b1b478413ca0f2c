"""Pydantic wire models. Write models forbid unknown fields; secrets are write-only."""
