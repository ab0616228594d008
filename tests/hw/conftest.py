from __future__ import annotations

from pathlib import Path

import pytest

from fames.hw.synthetic import write_synthetic_liberty


@pytest.fixture(scope="session")
def synth_lib(tmp_path_factory) -> Path:
    """The project's synthetic liberty, written once per session."""
    return write_synthetic_liberty(tmp_path_factory.mktemp("lib") / "fames_synth45.lib")
