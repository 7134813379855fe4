"""Writes. Each public function is `<entity>_<action>`, keyword-only, one transaction (docs/contributing.md §3)."""
