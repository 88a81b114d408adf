"""pyproject.toml: metadata that setuptools keeps accepting."""

from __future__ import annotations

import re
import tomllib

from conftest import ROOT


def test_license_is_an_spdx_expression_with_a_setuptools_that_reads_it() -> None:
    # A table (license = { text = "MIT" }) is deprecated by setuptools, and
    # builds fail with it from 2027-02-18; SPDX strings need setuptools 77.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT"
    requires = " ".join(pyproject["build-system"]["requires"])
    found = re.search(r"setuptools>=(\d+)", requires)
    assert found and int(found[1]) >= 77, requires
