"""The README's settings table is the one the config model generates."""

from __future__ import annotations

from pathlib import Path

from actors.core.config import settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_matches_the_config_model() -> None:
    assert settings_table() in README.read_text(), (
        "regenerate with: python -c 'from actors.core.config import settings_table; "
        "print(settings_table())'"
    )
