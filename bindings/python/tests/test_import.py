import subprocess
import sys


def test_importing_safestep_imports_no_framework():
    code = (
        "import sys, safestep, safestep.replay;"
        "bad = [m for m in ('torch', 'jax', 'optax') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
