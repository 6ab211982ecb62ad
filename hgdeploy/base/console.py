"""The one rich console every command and progress bar prints through."""

from __future__ import annotations

from rich.console import Console

console = Console()
