"""Every script's ``--help`` shows its usage examples one per line, as written in its docstring."""

from __future__ import annotations

import pytest

from _scripts import load_script


@pytest.mark.parametrize("script", ["scripts/run.py", "scripts/pretrain.py", "scripts/sequential.py"])
def test_help_keeps_the_example_lines_apart(script, capsys):
    module = load_script(script)
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out.splitlines()
    examples = [line.rstrip() for line in module.__doc__.splitlines() if line.startswith("    python")
                or line.startswith("    accelerate")]
    assert len(examples) >= 2
    for example in examples:
        assert example in shown, f"{example!r} is not a line of the --help output"
    assert "(default: " in "\n".join(shown)  # options still show their defaults
