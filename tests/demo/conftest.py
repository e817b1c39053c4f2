import sys
from pathlib import Path

# The Prometheus/Alertmanager helpers of the rule tests (binary lookup with the Debian package to install,
# free ports, bounded waits, HTTP JSON).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rules"))


def cli_env() -> dict[str, str]:
    """The environment for a CLI subprocess run elsewhere than the checkout: the agentvigil under test first
    on the path (a relative PYTHONPATH=src would not follow a different cwd)."""
    import os

    import agentvigil

    src = str(Path(agentvigil.__file__).resolve().parents[1])
    return dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
